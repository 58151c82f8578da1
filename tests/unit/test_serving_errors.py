"""The local server's error messages: TF Serving's status wording, without TensorFlow's internals."""

from infra.local_server.errors import runtime_message

# TensorFlow's Python runtime around a graph's status (atomic_function.py InterpolateRuntimeError).
WRAPPED = """Graph execution error:

Detected at node model/dense/MatMul defined at (most recent call last):
  File "/srv/infra/local_server/servable.py", line 96, in predict

    outputs = self._functions[name](**arguments)

Detected at node model/concat defined at (most recent call last):
<stack traces unavailable>
Matrix size-incompatible: In[0]: [1,66], In[1]: [67,1]
\t [[{{function_node __inference_serve_1806}}{{node model/dense/MatMul}}]] [Op:__inference_signature_wrapper_1822]"""


def test_graph_internals_are_dropped_and_the_status_message_kept():
    assert runtime_message(WRAPPED) == "Matrix size-incompatible: In[0]: [1,66], In[1]: [67,1]"
    assert runtime_message("indices[0] = 40 is not in [0, 21)\n\t [[{{node lookup}}]]") == (
        "indices[0] = 40 is not in [0, 21)"
    )
    assert runtime_message("Read less bytes than requested") == "Read less bytes than requested"
