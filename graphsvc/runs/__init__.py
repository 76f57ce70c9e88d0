"""What makes a batch job safe to kill and rerun: one run at a time (`lock`), work saved
batch by batch (`journal`), the crash tests' kill points (`kill`), and the phase timer
each job's summary reports (`timing`)."""

from graphsvc.runs.journal import RunJournal, job_journal, job_lock_path
from graphsvc.runs.kill import kill_point
from graphsvc.runs.lock import EXIT_LOCK_HELD, LockHeld, RunLock

__all__ = ["EXIT_LOCK_HELD", "LockHeld", "RunJournal", "RunLock", "job_journal", "job_lock_path", "kill_point"]
