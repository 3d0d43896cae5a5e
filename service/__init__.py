"""The huifang service: wires `asr` and `nlu` to the command line, HTTP, websockets, storage and auth."""
