"""HTTP handlers, one module per resource. Each is a class built with the
:class:`~sealpost.server.context.Context` whose methods are Starlette endpoints."""
