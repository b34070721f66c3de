"""Where a run's Optuna study lives: SQLite in the run directory (one driver), a database server
(PostgreSQL, MySQL: several drivers on several machines share one study, with heartbeats so a
dead driver's trials are failed and retried), or Optuna's journal file on a shared filesystem
(several drivers, no server).

    sqlite:///runs/x/study.db            the default
    postgresql://user:pw@host:5432/db    psycopg 3 (``pip install "psycopg[binary]"``)
    journal:/shared/fs/study.log         optuna.storages.JournalStorage
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna

from autoprune.errors import ConfigError

T = TypeVar("T")
JOURNAL = "journal:"
SERVER_SCHEMES = ("postgresql", "mysql")


def normalize(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy's bare scheme wants psycopg2)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def is_server(url: str | None) -> bool:
    """A database server several drivers on several machines can share."""
    return url is not None and url.split(":", 1)[0].split("+", 1)[0] in SERVER_SCHEMES


def is_shared(url: str | None) -> bool:
    """A storage several drivers can share: a database server or a journal file."""
    return url is not None and (is_server(url) or url.startswith(JOURNAL))


class RetryCandidate(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Queue a stale trial again only if it holds a sampler's candidate
    (:func:`autoprune.search.fidelity.worth_retrying`)."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from autoprune.search.fidelity import worth_retrying  # fidelity's package imports us

        if worth_retrying(trial):
            super().__call__(study, trial)


def open_storage(
    url: str | None,
    *,
    heartbeat_s: int | None = None,
    retries: int = 2,
) -> optuna.storages.BaseStorage | None:
    """The Optuna storage ``url`` names (``None``: in memory).

    On a database server, every running trial sends a heartbeat each ``heartbeat_s`` seconds;
    a trial whose heartbeat stopped for twice that long (its driver died) is failed by the next
    driver that looks, and queued again up to ``retries`` times
    (:class:`RetryCandidate`). Connections are checked before
    use, so drivers ride out a database restart.
    """
    if url is None:
        return None
    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len(JOURNAL) :])
        if not path.parent.is_dir():
            raise ConfigError(f"journal storage folder {path.parent} does not exist")
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict[str, Any] = {"engine_kwargs": {"pool_pre_ping": True}}
    with warnings.catch_warnings():  # heartbeats are experimental in Optuna, stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if is_server(url) and heartbeat_s:
            kwargs.update(
                heartbeat_interval=heartbeat_s,
                grace_period=2 * heartbeat_s,
                heartbeat_stale_trial_callback=RetryCandidate(max_retry=retries),
            )
        try:
            return optuna.storages.RDBStorage(normalize(url), **kwargs)
        except ModuleNotFoundError as e:
            raise ConfigError(
                f"storage {url.split('@')[-1]!r} needs a database driver: {e} "
                '(for PostgreSQL: pip install "psycopg[binary]")'
            ) from e


def masked(url: str) -> str:
    """``url`` without its password, for records (a password belongs in ~/.pgpass or the
    command line, not in a run directory).

    >>> masked("postgresql://me:secret@db:5432/x")
    'postgresql://me@db:5432/x'
    """
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1@", url)


def sync_run(run_dir: Path, url: str, study: str) -> int:
    """Bring ``run_dir``'s trial log and best policy up to date with the shared study
    (every driver's candidates); returns how many records were added."""
    from autoprune.records import TrialLog
    from autoprune.search.fidelity import quiet_optuna

    store = open_storage(url)
    assert store is not None
    with quiet_optuna():
        found = optuna.load_study(study_name=study, storage=store)
    records = [t.user_attrs["record"] for t in found.get_trials(deepcopy=False)
               if "record" in t.user_attrs]  # fmt: skip
    return TrialLog(run_dir, "").sync(records)


def transient(e: BaseException) -> bool:
    """A storage error that passes: the database restarting or a dropped connection."""
    if isinstance(e, optuna.exceptions.StorageInternalError):
        return True
    try:
        import sqlalchemy.exc as sa
    except ImportError:  # pragma: no cover - optuna requires sqlalchemy
        return False
    return isinstance(e, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError))


def retrying(
    fn: Callable[[], T], *, patience_s: float = 300.0, note: Callable[[str], None] | None = None
) -> T:
    """``fn()``, called again with growing pauses while it fails with a :func:`transient`
    storage error, for up to ``patience_s`` seconds (then the error is raised): a search rides
    out a database restart. ``fn`` must be safe to call again after a failure."""
    pause, deadline = 0.5, time.monotonic() + patience_s
    while True:
        try:
            return fn()
        except Exception as e:
            if not transient(e) or time.monotonic() > deadline:
                raise
            if note is not None:
                note(f"storage unavailable ({type(e).__name__}); retrying in {pause:.0f} s")
            time.sleep(pause)
            pause = min(2 * pause, 10.0)


__all__ = [
    "JOURNAL",
    "is_server",
    "is_shared",
    "masked",
    "normalize",
    "open_storage",
    "retrying",
    "sync_run",
    "transient",
]
