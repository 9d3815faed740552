"""The auditors' page: a small read-only, server-rendered web app over the model registry and its packets.

    rrg auditors --tracking-uri URI [--model NAME] [--port 8090]      (tokens: $RRG_AUDITOR_TOKENS, scope packet.read)

It lists every registered model version with its release-gate result, its PCCP verdict and its 510(k) packet (the
zip's SHA-256, SHA256SUMS and each file's hash, the Ed25519 signature's key and whether it is a development key),
and lets an auditor download a packet. Every packet is fetched from the registry (`registry.models`) and verified
(`regulatory.archive.verify_packet`: hashes and signature) before anything from it is shown or served; one that
fails verification is listed as FAILED with the problems and cannot be downloaded. The page shows the packet's
summary fields only: no report text, no images, no identifiers (the packet holds none).

    auditors/app.py        create_app, serve: routes, login (session cookie) or bearer token, security headers
    auditors/catalogue.py  what the page lists: registry versions + verified packets (cached for a few minutes)
    auditors/tokens.py     $RRG_AUDITOR_TOKENS and the login sessions
    auditors/templates/    Jinja2 (autoescaped), one stylesheet, no scripts
"""
