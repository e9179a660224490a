"""The papers' analyses (commands of ``python -m mmjax.analyze``), one module per experiment."""
