"""Helpers shared by the cogs: custom ids, components, checks, prompt and image handling, message text."""
