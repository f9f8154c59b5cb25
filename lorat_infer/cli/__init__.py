"""Command-line tools: lorat-track, lorat-export, the demo."""
