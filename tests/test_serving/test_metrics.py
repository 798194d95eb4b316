"""ServeMetrics: Prometheus text of requests, errors, latency, batches."""
from vpt_mm.serving import ServeMetrics


def test_render_counts_everything():
    m = ServeMetrics()
    m.merge([('request', ['a', 'b'], 0.02), ('request', ['a'], 0.3),
             ('error', ['a'], 404), ('error', [], 400),
             ('batch', 6, 2), ('batch', 1, 1)])
    text = m.render()
    assert 'vpt_requests_total{task="a"} 2' in text
    assert 'vpt_requests_total{task="b"} 1' in text
    assert 'vpt_errors_total{task="a",status="404"} 1' in text
    assert 'vpt_errors_total{task="",status="400"} 1' in text
    assert 'vpt_request_latency_seconds_bucket{task="a",le="0.025"} 1' in text
    assert 'vpt_request_latency_seconds_bucket{task="a",le="+Inf"} 2' in text
    assert 'vpt_request_latency_seconds_count{task="a"} 2' in text
    assert 'vpt_batch_size_bucket{le="8"} 2' in text
    assert 'vpt_batch_tasks_sum 3' in text
    assert 'vpt_mixed_batches_total 1' in text
    # Every sample line is "name{labels} value" or "name value".
    for line in text.splitlines():
        if not line.startswith('#'):
            assert len(line.rsplit(' ', 1)) == 2, line
            float(line.rsplit(' ', 1)[1])
