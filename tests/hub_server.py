"""A loopback HTTP server that speaks the Hugging Face Hub's file protocol, for offline tests.

HEAD/GET /{org}/{name}/resolve/{revision}/{filename} answer with X-Repo-Commit, ETag and
Content-Length (what huggingface_hub's hf_hub_download needs); a missing file is a 404 with
X-Error-Code: EntryNotFound, an unknown repo a 401 with RepoNotFound, as the Hub answers an anonymous request for
a repo that does not exist (or is private). No xet headers.
"""
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict
from urllib.parse import unquote

COMMIT = 'a' * 40


class HubServer:
    def __init__(self, repos: Dict[str, Path]):
        self.repos = {k: Path(v) for k, v in repos.items()}
        self.requests = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _resolve(self):
                parts = unquote(self.path.split('?')[0]).strip('/').split('/')
                server.requests.append((self.command, '/'.join(parts)))
                if len(parts) < 5 or parts[2] != 'resolve':
                    return None, 'RepoNotFound'
                repo, filename = '/'.join(parts[:2]), '/'.join(parts[4:])
                if repo not in server.repos:
                    return None, 'RepoNotFound'
                f = server.repos[repo] / filename
                return (f, None) if f.is_file() else (None, 'EntryNotFound')

            def _headers(self, f: Path):
                data = f.read_bytes()
                self.send_response(200)
                self.send_header('Content-Type', 'application/octet-stream')
                self.send_header('Content-Length', str(len(data)))
                self.send_header('ETag', '"' + hashlib.sha256(data).hexdigest() + '"')
                self.send_header('X-Repo-Commit', COMMIT)
                self.end_headers()
                return data

            def _not_found(self, code: str):
                self.send_response(401 if code == 'RepoNotFound' else 404)
                self.send_header('X-Error-Code', code)
                self.send_header('X-Error-Message', code)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def do_HEAD(self):
                f, err = self._resolve()
                self._not_found(err) if err else self._headers(f)

            def do_GET(self):
                f, err = self._resolve()
                if err:
                    return self._not_found(err)
                self.wfile.write(self._headers(f))

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)  # fast stop

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        return False
