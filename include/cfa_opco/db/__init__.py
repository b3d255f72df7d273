"""Database access shared by tasks, command-line tools and tests."""
