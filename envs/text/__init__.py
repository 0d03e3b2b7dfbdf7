"""Text worlds: TextCraft."""
