"""Serving artifacts with Triton Inference Server.

    endpoints.py     what a served artifact offers (raw graphs + family processor endpoints) and how
                     a batch of requests runs, each request's errors kept to itself
    repository.py    a Triton model repository (config.pbtxt per model) from an artifact
    pbtxt.py         protobuf text format writer
    python_model.py  the Python-backend model body; triton_model.py is the model.py copied next to it
    server.py        `vlexport serve`: PyTriton's tritonserver on a serve-mode repository
    cli.py           the two commands' arguments
Nothing here imports Triton, PyTriton or tritonclient at import time.
"""
