"""Web agents: MiniWoB++ pages in headless Chromium, branching by replay."""
