"""A stand-in Kaggle competition server on loopback, spoken to by the real kaggle client.

With KAGGLE_API_ENVIRONMENT=LOCALHOST the kaggle client sends its calls to http://localhost as JSON
POSTs to /api/v1/<service>/<method>. Binding port 80 needs root, so the stand-in listens on a free
port and the client reaches it as an HTTP proxy (HTTP_PROXY): the request line then carries the
full http://localhost/... URL. It implements what download, submit and listing submissions use,
keeps every uploaded file, and scores it against hidden answers like a competition would. It takes
an API key (KAGGLE_USERNAME/KAGGLE_KEY) or an access token (KAGGLE_API_TOKEN, which the client first
checks with IntrospectToken: a token Kaggle does not know is refused with HTTP 401 or called inactive).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from sklearn import metrics as sk

API = "/api/v1/competitions.CompetitionApiService/"
INTROSPECT = "/api/v1/security.OAuthService/IntrospectToken"


@dataclass
class Competition:
    archive: bytes  # what DownloadDataFiles serves
    answers: pd.DataFrame  # id,label of the test set; the first half is public, the rest private
    # How the leaderboard scores: a label column by accuracy, macro_f1, ...; probability columns by log_loss.
    metric: str = "accuracy"


@dataclass
class StoredSubmission:
    ref: int
    file_name: str
    description: str
    content: bytes
    date: str
    status: str = "PENDING"
    public_score: str | None = None
    private_score: str | None = None
    error: str | None = None
    polls: int = 0


@dataclass
class StandIn:
    competitions: dict[str, Competition]
    username: str = "standin-user"
    key: str = "standin-secret-key-0123456789"
    token: str = "standin-access-token-0123456789"
    token_refusal: int | None = (
        401  # IntrospectToken's answer to an unknown token: this HTTP status, or None: {"active": false}
    )
    pending_polls: int = 1  # listings that still show a new submission as PENDING
    failures: dict[str, int] = field(default_factory=dict)  # method -> HTTP status of its next answer
    calls: list[str] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)  # token -> file content
    upload_names: dict[str, str] = field(default_factory=dict)
    submissions: dict[str, list[StoredSubmission]] = field(default_factory=dict)

    def __enter__(self) -> StandIn:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def env(self, **credentials: str) -> dict[str, str]:
        """Environment that points the kaggle client here, with these credentials (default: valid ones)."""
        credentials = credentials or {"KAGGLE_USERNAME": self.username, "KAGGLE_KEY": self.key}
        return {
            "KAGGLE_API_ENVIRONMENT": "LOCALHOST",
            "HTTP_PROXY": self.proxy,
            "http_proxy": self.proxy,
            "NO_PROXY": "",
            "no_proxy": "",
            **credentials,
        }

    def fail_next(self, method: str, status: int = 500) -> None:
        self.failures[method] = status

    # --- what the endpoints do ---

    def authorized(self, header: str | None) -> bool:
        if header and header.startswith("Bearer "):
            return header.removeprefix("Bearer ") == self.token
        if not header or not header.startswith("Basic "):
            return False
        return base64.b64decode(header[6:]).decode() == f"{self.username}:{self.key}"

    def score(self, competition: Competition, content: bytes) -> tuple[str | None, str | None, str | None]:
        """(public, private, error) score of an uploaded CSV by the competition's metric."""
        try:
            submitted = pd.read_csv(io.BytesIO(content), dtype=str, keep_default_na=False)
            submitted = submitted.rename(columns={submitted.columns[0]: "id"})  # id_code, image_id, ...: the key
            answers = competition.answers[["id", "label"]]  # not the answer table's other columns (valence, ...)
            merged = answers.merge(submitted, on="id", how="left", suffixes=("", "_submitted"))
            predicted = [column for column in merged.columns if column not in ("id", "label")]
            if len(submitted) != len(competition.answers) or merged[predicted].isna().any().any():
                return None, None, "Submission must have one row per test id"
            half = len(merged) // 2
            scores = [score_rows(rows, predicted, competition.metric) for rows in (merged[:half], merged[half:])]
        except (pd.errors.ParserError, KeyError, ValueError) as error:
            return None, None, f"Could not parse submission: {error}"
        return f"{scores[0]:.5f}", f"{scores[1]:.5f}", None


def score_rows(rows: pd.DataFrame, predicted: list[str], metric: str) -> float:
    """Kaggle's scoring of merged answer and submission rows: a label column, or one probability column per class
    (log-loss clipped to [1e-15, 1 - 1e-15], each row rescaled to sum to one)."""
    if metric == "log_loss":
        probs = np.clip(rows[predicted].astype(float).to_numpy(), 1e-15, 1 - 1e-15)
        probs /= probs.sum(axis=1, keepdims=True)
        truth = rows["label"].map({name: i for i, name in enumerate(predicted)}).to_numpy()
        return float(-np.log(probs[np.arange(len(rows)), truth]).mean())
    if metric == "mean_f1":  # multi-label: labels separated by spaces, or one 0/1 column per class
        truth = [set(cell.split()) for cell in rows["label"]]
        if len(predicted) == 1:
            guesses = [set(cell.split()) for cell in rows[predicted[0]]]
        else:
            guesses = [{c for c in predicted if float(row[c]) >= 0.5} for _, row in rows.iterrows()]
        return float(np.mean([2 * len(t & g) / (len(t) + len(g)) for t, g in zip(truth, guesses)]))
    if metric == "roc_auc":  # one probability column per class; an answer lists its classes
        truth = [set(cell.split()) for cell in rows["label"]]
        scores = [sk.roc_auc_score([c in t for t in truth], rows[c].astype(float)) for c in predicted]
        return float(np.mean(scores))
    truth, guess = rows["label"].to_numpy(), rows[predicted[0]].to_numpy()
    if metric in ("qwk", "rmse"):  # grades are numbers
        truth, guess = truth.astype(float), guess.astype(float)
    scorers = {
        "qwk": lambda t, g: sk.cohen_kappa_score(t, g, weights="quadratic"),
        "rmse": lambda t, g: np.sqrt(sk.mean_squared_error(t, g)),
        "accuracy": sk.accuracy_score,
        "balanced_accuracy": sk.balanced_accuracy_score,
        "macro_f1": lambda t, g: sk.f1_score(t, g, average="macro"),
    }
    return float(scorers[metric](truth, guess))


def _handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        @property
        def route(self) -> str:
            return urlsplit(self.path).path  # proxied requests carry the full URL

        def send_json(self, payload: dict, status: int = 200) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def send_error_json(self, status: int, message: str) -> None:
            self.send_json({"code": status, "message": message}, status)

        def read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)

        def do_POST(self) -> None:
            body = json.loads(self.read_body() or b"{}")
            method = self.route.rsplit("/", 1)[-1]  # DownloadDataFiles, IntrospectToken, ...
            standin.calls.append(method)
            if method in standin.failures:
                self.send_error_json(standin.failures.pop(method), "Internal server error")
            elif self.route == INTROSPECT:
                self.api_IntrospectToken(body)
            elif not standin.authorized(self.headers.get("Authorization")):
                self.send_error_json(401, "Unauthenticated")
            elif body.get("competitionName") not in standin.competitions:
                self.send_error_json(404, f"Competition {body.get('competitionName')!r} not found")
            elif hasattr(self, f"api_{method}"):
                getattr(self, f"api_{method}")(body)
            else:
                self.send_error_json(501, f"the stand-in does not implement {method}")

        def api_IntrospectToken(self, body: dict) -> None:
            if body.get("token") == standin.token:
                self.send_json({"active": True, "username": standin.username})
            elif standin.token_refusal is None:
                self.send_json({"active": False})
            else:
                self.send_error_json(standin.token_refusal, "Unauthenticated")

        def api_DownloadDataFiles(self, body: dict) -> None:
            self.send_response(302)  # Kaggle redirects to a signed storage URL named <slug>.zip
            self.send_header("Location", f"http://localhost/storage/{body['competitionName']}.zip")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def api_StartSubmissionUpload(self, body: dict) -> None:
            token = f"blob-{len(standin.uploads) + 1}"
            standin.uploads[token] = b""
            standin.upload_names[token] = body.get("fileName", "")
            self.send_json({"token": token, "createUrl": f"http://localhost/upload/{token}"})

        def api_CreateSubmission(self, body: dict) -> None:
            slug, token = body["competitionName"], body.get("blobFileTokens")
            if not standin.uploads.get(token):
                self.send_error_json(400, f"no uploaded file for token {token!r}")
                return
            stored = standin.submissions.setdefault(slug, [])
            submission = StoredSubmission(
                ref=1000 + sum(map(len, standin.submissions.values())),
                file_name=standin.upload_names[token],
                description=body.get("submissionDescription", ""),
                content=standin.uploads[token],
                date=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            )
            submission.public_score, submission.private_score, submission.error = standin.score(
                standin.competitions[slug], submission.content
            )
            stored.insert(0, submission)
            self.send_json({"message": "Successfully submitted to the stand-in competition", "ref": submission.ref})

        def api_ListSubmissions(self, body: dict) -> None:
            listed = []
            for s in standin.submissions.get(body["competitionName"], []):
                s.polls += 1
                done = s.polls > standin.pending_polls
                status = ("ERROR" if s.error else "COMPLETE") if done else "PENDING"
                listed.append(
                    {
                        "ref": s.ref,
                        "date": s.date,
                        "description": s.description,
                        "fileName": s.file_name,
                        "status": status,
                        "totalBytes": len(s.content),
                        **(
                            {"publicScore": s.public_score, "privateScore": s.private_score}
                            if done and not s.error
                            else {}
                        ),
                        **({"errorDescription": s.error} if done and s.error else {}),
                    }
                )
            self.send_json({"submissions": listed})

        def api_GetSubmissionLimits(self, body: dict) -> None:
            self.send_json({"numToday": 1, "numTotal": 1, "numAllowedNow": 4})

        def do_GET(self) -> None:
            standin.calls.append(f"GET {self.route}")
            slug = self.route.removeprefix("/storage/").removesuffix(".zip")
            if not self.route.startswith("/storage/") or slug not in standin.competitions:
                self.send_error_json(404, "no such file")
                return
            archive = standin.competitions[slug].archive
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(archive)))
            self.send_header("Last-Modified", formatdate(time.time() - 3600, usegmt=True))
            self.end_headers()
            self.wfile.write(archive)

        def do_PUT(self) -> None:
            standin.calls.append(f"PUT {self.route}")
            token = self.route.removeprefix("/upload/")
            if token not in standin.uploads:
                self.send_error_json(404, "unknown upload")
                return
            standin.uploads[token] = self.read_body()
            self.send_json({})

    return Handler
