"""OPC UA connector (asyncua): subscriptions, browse-path addressing, security, machine identity."""
