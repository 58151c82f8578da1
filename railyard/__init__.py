"""Railyard: daily TensorFlow retraining shipped safely to TensorFlow Serving."""

__version__ = "0.1.0"
