"""The radiologist's web page, served beside a site's inference service (`--web-address`).

`settings.py` what the page is configured with, `access.py` who may use it (client
certificates, bearer tokens, a reverse proxy's headers) and the CSRF and content-security rules,
`study_upload.py` a browser's multipart upload streamed into a study folder within limits,
`results.py` a diagnosis as the page shows it, `history.py` the SQLite history, `app.py` the
Starlette routes, `https.py` uvicorn over TLS in a thread; `static/` the page itself (plain
HTML, CSS and JavaScript: no build step, no third-party requests).
"""
