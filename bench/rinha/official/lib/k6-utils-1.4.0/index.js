import {
	parseDuration,
	getCurrentStageIndex,
	tagWithCurrentStageIndex,
	tagWithCurrentStageProfile,
} from './stages.js'

import {
	findBetween,
	normalDistributionStages,
	randomIntBetween,
	randomItem,
	randomString,
	uuidv4,
} from './utils.js'

export {
	parseDuration,
	getCurrentStageIndex,
	tagWithCurrentStageIndex,
	tagWithCurrentStageProfile,
	findBetween,
	normalDistributionStages,
	randomIntBetween,
	randomItem,
	randomString,
	uuidv4,
}
