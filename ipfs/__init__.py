"""IPFS: a Kubo RPC client, the model manifest, fetch and publish, bundles."""
