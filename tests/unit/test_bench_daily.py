from bench.bench_daily import task_seconds

LOG = """\
23:59:50.000 | INFO    | prefect - Starting temporary server on http://127.0.0.1:8626
23:59:58.500 | INFO    | Flow run 'able-myna' - Beginning flow run 'able-myna' for flow 'retrain'
23:59:59.000 | INFO    | Task run 'load-data-301' - Finished in state Completed()
00:00:09.250 | INFO    | Task run 'train-669' - training: trained from scratch
00:00:19.000 | INFO    | Task run 'train-669' - Finished in state Completed()
00:00:20.000 | INFO    | Task run 'read-production-version-8d2' - Finished in state Completed()
00:00:20.500 | INFO    | Task run 'read-production-version-84c' - Finished in state Completed()
"""


def test_each_task_took_from_the_end_of_the_one_before_across_midnight_and_repeats_add_up():
    assert task_seconds(LOG) == {"load-data": 0.5, "train": 20.0, "read-production-version": 1.5}
