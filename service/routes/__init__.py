"""HTTP and websocket routers, one per resource."""
