"""The run folder: the models a run made (`registry`)."""
