"""Background work: recording jobs (`jobs`), archive scoring (`archive`, `ray_pool`)."""
