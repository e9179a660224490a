"""See package docstring of mmjax."""
