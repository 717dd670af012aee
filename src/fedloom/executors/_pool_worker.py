"""The loop each process-pool worker runs: hold some clients' data, run their tasks on request.

A worker is deliberately stateless between tasks apart from its program and its clients' data:
each client's state arrives with its task and leaves with the result, so a worker killed at any
moment loses nothing the parent cannot resend to its replacement.
"""

from __future__ import annotations

import pickle
import signal
import traceback
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory

from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine.tasks import EvaluateTask, Task, TrainTask
from fedloom.executors._pool_memory import (
    SlotWriter,
    attach_block,
    buffer,
    copied_mapping,
    read_only,
    release_block,
)
from fedloom.executors._pool_messages import (
    Batch,
    Done,
    PackedResult,
    Ready,
    Started,
    StartFailed,
    TaskSpec,
)
from fedloom.executors._workers import failure_from, single_threaded_torch
from fedloom.executors.inprocess import InProcessExecutor


def serve(conn: Connection) -> None:
    """Receive and unpack ``(pickled program, clients)``, then answer batches until told to stop.

    The payload comes from the parent process of the same user on this machine; unpickling it
    is safe only because of that.
    """
    # Ctrl-C reaches the whole process group; the parent handles it and closes the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        payload = conn.recv_bytes()
    except EOFError:
        return
    try:
        program, clients = pickle.loads(payload)
        program = pickle.loads(program)
        executor = InProcessExecutor(program, clients, catch=False)
        single_threaded_torch()
    except Exception:
        conn.send(StartFailed(traceback.format_exc()))
        return
    del payload
    conn.send(Ready())
    blocks: dict[str, SharedMemory] = {}
    try:
        while True:
            try:
                batch = conn.recv()
            except EOFError:  # the parent is gone
                return
            if batch is None:
                return
            assert isinstance(batch, Batch)
            inputs = _attached(blocks, batch.inputs, keep=batch.results)
            results = _attached(blocks, batch.results, keep=batch.inputs)
            # Each task starts as the one before it ends, so only a batch's start is announced.
            conn.send(Started(batch.tasks[0].position))
            for spec in batch.tasks:
                conn.send(run_task(executor, spec, buffer(inputs), buffer(results)))
    finally:
        for block in blocks.values():
            release_block(block, unlink=False)


def run_task(
    executor: InProcessExecutor, spec: TaskSpec, inputs: memoryview, results: memoryview
) -> Done:
    """Run ``spec`` through the in-process executor, so its behaviour is the reference's."""
    task = _task(spec, inputs)
    if spec.train:
        executor.states[spec.client] = copied_mapping(inputs, spec.state)
    try:
        reply = executor.run([task])[0]
    except Exception as error:
        return Done(spec.position, failure_from(error), None, 0)
    finally:
        state = executor.states.pop(spec.client, None)
    slot = SlotWriter(results, spec.slot, spec.capacity)
    packed: object = reply
    if isinstance(reply, ClientResult):
        packed = PackedResult(
            slot.put(reply.update),
            reply.num_examples,
            slot.put_mapping(reply.extras),
            dict(reply.metrics),
            reply.payload,
        )
    packed_state = slot.put_mapping(state) if spec.train and state is not None else None
    return Done(spec.position, packed, packed_state, slot.needed)


def _task(spec: TaskSpec, inputs: memoryview) -> Task:
    """The engine's task rebuilt around read-only views of the shared input block."""
    params = read_only(inputs, spec.params)
    if not spec.train:
        return EvaluateTask(spec.client, params)
    extras = {name: read_only(inputs, value) for name, value in spec.extras.items()}
    return TrainTask(
        spec.client, Broadcast(spec.round, params, spec.seed, extras, spec.stage_config)
    )


def _attached(blocks: dict[str, SharedMemory], name: str, *, keep: str) -> SharedMemory:
    """Block ``name``, attaching it on first use and letting go of blocks the parent replaced."""
    block = blocks.get(name)
    if block is None:
        for old in [n for n in blocks if n not in (name, keep)]:
            release_block(blocks.pop(old), unlink=False)
        block = blocks[name] = attach_block(name)
    return block
