"""Serving benchmark: sprintd and its peers under the same load, one worker each."""
