"""Background work: the one worker loop (`loop`), recording jobs (`jobs`), archive scoring (`archive`,
`ray_pool`)."""
