"""Carrying changes into the newest generation: what writers did to older generations while a rebuild ran
(edits, new images, deletions), and the housekeeping pass of a long-running process that does it and drops
retired generations. Shared by the reindex (before and after its switch) and every server that follows it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

from imagematch.records import ImageRecord
from imagematch.services.embedding import Embedding
from imagematch.services.pairing import Active, Pairing
from imagematch.store import generations, tuned
from imagematch.store.base import Records

log = logging.getLogger(__name__)


class ChangeCarrier:
    def __init__(self, pairing: Pairing, embedding: Embedding) -> None:
        self.pairing = pairing
        self.embedding = embedding
        self._housekeeping = threading.Lock()

    def keep_house(self) -> None:
        if not self._housekeeping.acquire(blocking=False):
            return
        try:
            active = self.pairing.active
            if active.store.generations().live == active.store.generation_name:
                self.carry_changes(active)
                generations.sweep(active.store)
                if not active.store.list_documents(generations.RETIRED):  # old generations gone: their tuning too
                    tuned.keep_only(active.store, active.embedder.model_id)
        except Exception:
            log.exception("carrying changes into the new generation failed; trying again later")
        finally:
            self._housekeeping.release()

    def carry_changes(self, target: Active) -> int:
        """Bring what writers did to older generations into `target`: edits, new images (embedded by its
        model from their originals) and deletions. Returns how many changes were carried."""
        pointers = target.store.generations()
        if target.store.generation_name != (pointers.staging or pointers.live):
            return 0  # a newer generation is being built: the changes are for it
        sources: dict[str, Records] = {}
        carried = 0
        with self.pairing.pinned(target):
            for change in generations.pending_changes(target.store):
                if change.source != target.store.generation_name:
                    if change.kind == "delete":
                        kept = target.store.get(change.image_id)
                        if kept is None or kept.updated_at.timestamp() <= change.at:  # not added again since
                            target.store.delete([change.image_id])
                    else:
                        source = sources.get(change.source) or target.store.at(change.source)
                        sources[change.source] = source
                        record = source.get(change.image_id)
                        if record is None and time.time() - change.at < generations.CHANGE_SETTLES:
                            continue  # its write may still be on its way
                        if record is not None:
                            self._carry(record, target)
                    carried += 1
                generations.forget_change(target.store, change)
        if carried:
            log.info("carried %d changes into generation %s", carried, target.store.generation_name)
        return carried

    def _carry(self, record: ImageRecord, target: Active) -> None:
        """The check and the write under the library's lock: the reindex and every server carry the same changes
        after a switch, and two inserts of one image would store it twice."""
        with self.pairing.write_lock, target.store.exclusive():
            self._carry_one(record, target)

    def _carry_one(self, record: ImageRecord, target: Active) -> None:
        model_id = target.embedder.model_id
        stored = target.store.get_vectors([record.id]).get(record.id)
        if stored is not None:
            kept = target.store.get(record.id)
            if kept is not None and kept.updated_at > record.updated_at:
                return  # edited in the new generation since: the older change does not overwrite it
            updated = replace(record, model_id=model_id, cutout=kept.cutout if kept else record.cutout)
            target.store.update(updated, self.embedding.words_vectors([updated])[0])
            return
        loaded = self.embedding.reload(record)
        if loaded is not None:
            self.embedding.embed_into(target.store, [loaded])
