"""Model kinds: the protocol a model follows to go through Railyard (``base``), the kinds shipped
(one module each) and how ``RAILYARD_MODEL_KIND`` finds one (``registry``)."""
