"""Hosted image and video generators (no GPU): OpenAI Images and fal's queue."""
