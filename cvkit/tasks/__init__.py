"""Task runs on the shared engine: :mod:`cvkit.tasks.classify` (``task: classify``)."""
