"""log-server-client: send Python ``logging`` records to log-server.

    import logging
    from log_server_client import LogServerHandler

    logging.getLogger().addHandler(LogServerHandler(port=4020, service_name="billing"))

``handler`` holds the handler (bounded buffer, background sender, reconnects);
``wire`` holds the TCP framing and the Cap'n Proto schemas shipped with the
package.
"""

from .handler import LogServerHandler, level_name

__all__ = ["LogServerHandler", "level_name"]
__version__ = "0.1.0"
