"""Planning: plan schema, LLM and scripted planners, validation and repair."""

__all__: list[str] = []
