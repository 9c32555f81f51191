"""daytime: the Daytime Protocol (RFC 867) over TCP.

"Once a connection is established the current date and time is sent out
the connection as a ascii character string (and any data received is
thrown away). The service closes the connection after sending the quote."
(RFC 867). The syntax of the date is not specified; the default format is
the RFC's own example, "Weekday, Month Day, Year Time-Zone".
"""

from __future__ import annotations

import datetime

import attrs

import reactorkit

__version__ = "1.0.0"


@attrs.frozen(kw_only=True)
class DaytimeOptions:
    """``[listen.options]`` of the daytime handler type."""

    utc: bool = True
    format: str = "%A, %B %d, %Y %H:%M:%S-%Z"


class DaytimeHandler(reactorkit.Handler):
    """Send the date and time, then close; input is ignored."""

    def __init__(self, options: DaytimeOptions) -> None:
        super().__init__(options)
        self.options = options

    def connection_made(self, connection: reactorkit.Transport) -> None:
        now = datetime.datetime.now(datetime.UTC if self.options.utc else None).astimezone(
            datetime.UTC if self.options.utc else None
        )
        line = now.strftime(self.options.format)
        connection.write(line.encode("ascii", "replace") + b"\r\n")
        connection.close()


@reactorkit.hookimpl
def reactorkit_handler_types() -> list[reactorkit.HandlerType]:
    return [
        reactorkit.HandlerType(
            name="daytime",
            handler=DaytimeHandler,
            options=DaytimeOptions,
            description="RFC 867 daytime: sends the date and time, then closes",
            default_port=7013,
        )
    ]
