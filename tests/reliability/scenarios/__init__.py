"""One module per family of scenarios; each scenario is ``async def name(ctx: Context) -> Row``."""
