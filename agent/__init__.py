"""The agent: skills, the LangGraph loop, the SDK, the CLI and the service."""

__all__: list[str] = []
