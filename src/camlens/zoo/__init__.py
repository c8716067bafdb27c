"""Models from the zoos: torchvision, timm and Hugging Face transformers, built by name.

Each loader returns ``(model, info)`` as :func:`camlens.sources.load_model`
describes, with the class names and the preprocessing the model's own
configuration records. The libraries are imported only when a spec names them.
"""
