"""WebSocket APIs (API Gateway's protocolType WEBSOCKET), the part that runs in a worker:
the stage endpoint that answers the upgrade ($connect) and the @connections API
(endpoint.py), the events AWS sends a function (events.py), the integrations a route
calls (integrations.py), and where every connection of the host lives and how a post
reaches it (connections.py: this worker, another worker, another host through Redis).
The framing itself is compiled: fastgate/_core/websocket.pyx. docs/websocket.md."""
