"""The contracts every stage imports: requests and outputs, the model protocol, task config.

* :mod:`harness.api.requests`: what flows from tasks to adapters (one
  :class:`~harness.api.requests.Request` per document, or one
  :class:`~harness.api.requests.LoglikelihoodRequest` per document and choice)
  and back (text, a :class:`~harness.api.requests.Failure`, or a
  :class:`~harness.api.requests.Loglikelihood`), and the generation settings;
* :mod:`harness.api.model`: the model protocol the evaluation loop calls;
* :mod:`harness.api.config`: the schema of task and group YAML files.

Nothing here imports the rest of the package (only :mod:`harness.errors` and
:mod:`harness.hooks`, which are leaves); a test checks it.
"""
