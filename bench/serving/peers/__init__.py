"""Raw apps (no framework) for the peer servers, answering what sprintd's plugin does."""
