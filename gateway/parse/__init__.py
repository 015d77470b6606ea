"""Raw mail to values: MIME parsing, quote stripping, telling automatic mail from people,
DKIM verification, and the sandbox (a child process with a time budget) that parses and
triages untrusted bytes. Nothing here touches the store or the event loop's state."""
