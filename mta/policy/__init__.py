"""Access policy: who may send what to whom, decided at each SMTP stage.

``checks`` (the decision points) runs the lists that ``restrictions``
compiles; ``dnsxl``/``dns``, ``policyclient`` and ``verify`` do their I/O
through ``runtime``; ``content`` inspects the message (header/body_checks).
See docs/policy.md.
"""
