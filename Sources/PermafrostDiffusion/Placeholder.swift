// schedulers
