"""The services behind the Library facade (library.py), one job each.

pairing.py (the model and generation in use) and embedding.py (images and words to vectors) are what every other
service works with; carrying.py brings changes into a new generation; ingest.py, search.py, catalog.py,
duplicate_review.py, caption_queue.py and maintenance.py are what the entry points call.
"""
