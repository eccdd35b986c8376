"""ganvas: a fast text-to-image GAN for the tools artists already use."""
__version__ = "0.1.0"
