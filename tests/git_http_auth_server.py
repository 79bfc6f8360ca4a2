"""A smart-HTTP git server that requires HTTP basic auth: `git http-backend` run as a CGI program
behind Python's http.server, for the credential tests (tests/support.py starts it).

    python git_http_auth_server.py ROOT PORT USER PASSWORD LIFETIME_S
"""

from __future__ import annotations

import base64
import http.server
import os
import subprocess
import sys
import threading
import urllib.parse

CGI_TIMEOUT_S = 60


class GitHttpHandler(http.server.BaseHTTPRequestHandler):
    """Answers 401 without the right Authorization header, else runs git http-backend."""

    root = ""
    authorization = ""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # a test server: quiet

    def _serve(self) -> None:
        if self.headers.get("Authorization") != self.authorization:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "GIT_PROJECT_ROOT": self.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": urllib.parse.unquote(path),
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "REMOTE_USER": "tester",
            "REMOTE_ADDR": self.client_address[0],
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            # the repositories may belong to another user than this process (FACTS.md)
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "safe.directory",
            "GIT_CONFIG_VALUE_0": "*",
        }
        body = self._body()
        env["CONTENT_LENGTH"] = str(len(body))
        output = subprocess.run(
            ["git", "http-backend"],
            input=body,
            env=env,
            capture_output=True,
            timeout=CGI_TIMEOUT_S,
        ).stdout
        separator = b"\r\n\r\n" if b"\r\n\r\n" in output else b"\n\n"
        head, _, payload = output.partition(separator)
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> bytes:
        """The request body; git sends a large one in chunks."""
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()
        return b"".join(chunks)


def main(root: str, port: str, user: str, password: str, lifetime_s: str) -> None:
    """Serve ``root`` on 127.0.0.1:``port`` for at most ``lifetime_s`` seconds."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    GitHttpHandler.root = root
    GitHttpHandler.authorization = f"Basic {token}"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), GitHttpHandler)
    threading.Timer(float(lifetime_s), server.shutdown).start()  # bounded, even if orphaned
    server.serve_forever()


if __name__ == "__main__":
    main(*sys.argv[1:])
