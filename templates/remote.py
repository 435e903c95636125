"""Members of a tritongen ensemble served by another tritonserver (another node), called over
gRPC with tritonclient's asyncio client from inside the BLS combiner.

Copied next to the combiner's model.py only when some member has a `url`; it needs
`tritonclient[grpc]` in the server's Python environment (the NGC server image lacks it:
`pip install tritonclient[grpc]` in an image built on it). A member with `tls` is called over
TLS: `root_certificates` (the CA that signed the server's certificate) and, for mutual TLS,
`private_key` and `certificate_chain`, all PEM files on this machine; plaintext otherwise.
"""

import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import np_to_triton_dtype


class RemoteMembers:
    """One gRPC client per server, made on first use so that it binds to the running loop."""

    def __init__(self):
        self.clients = {}

    async def infer(self, member, chunk):
        tensor = grpcclient.InferInput(
            member["input"], list(chunk.shape), np_to_triton_dtype(chunk.dtype)
        )
        tensor.set_data_from_numpy(chunk)
        requested = [grpcclient.InferRequestedOutput(member["output"])]
        result = await self._client(member).infer(member["name"], [tensor], outputs=requested)
        return result.as_numpy(member["output"])

    def _client(self, member):
        url, tls = member["url"], member.get("tls")
        key = (url, tuple(sorted(tls.items())) if tls is not None else None)
        if key not in self.clients:
            self.clients[key] = grpcclient.InferenceServerClient(
                url, ssl=tls is not None, **(tls or {})
            )
        return self.clients[key]
