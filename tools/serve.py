"""Serve the tuned tasks of a folder on one frozen backbone over HTTP.

Every ``*.safetensors`` file of ``--tasks-dir`` is a task (named after the
file), loaded strictly on the config's pretrained backbone; files added,
replaced or removed later are picked up within ``--scan-interval``.
Requests of different tasks arriving within ``--batch-wait-ms`` run in one
forward of the backbone. Built on Ray Serve: ``--replicas N`` runs N
copies, on this machine or, with ``--address``, across a Ray cluster.

Examples:
    python tools/serve.py configs/vtab/vpt_deep_vit-b.py --tasks-dir tasks/
    curl -F image=@cat.jpg -F tasks=dmlab,eurosat \
        http://127.0.0.1:8000/v1/predict
    ray start --head   # each other machine: ray start --address=HEAD:6379
    python tools/serve.py CONFIG --tasks-dir /shared/tasks --address auto \
        --replicas 8 --device cuda
"""
import argparse
import signal
import threading

import vpt_mm  # noqa: F401  (compatibility fixes first, registration)
from vpt_mm.config import add_config_args
from vpt_mm.serving.app import ServeOptions, start_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser, task=False)
    parser.add_argument('--tasks-dir', required=True,
                        help='folder of tuned-only .safetensors files')
    parser.add_argument('--host', default='127.0.0.1',
                        help='interface to listen on (default: 127.0.0.1; '
                        '0.0.0.0 for every interface)')
    parser.add_argument('--port', type=int, default=8000)
    parser.add_argument('--device', default='cpu',
                        help='cpu or cuda (one GPU per replica)')
    parser.add_argument('--max-batch-size', type=int, default=32,
                        help='samples (image x task) per backbone forward')
    parser.add_argument('--batch-wait-ms', type=float, default=5.0,
                        help='how long a batch waits to fill')
    parser.add_argument('--replicas', type=int, default=1)
    parser.add_argument('--cpus-per-replica', type=float,
                        help='CPUs Ray reserves per replica (default: the '
                        'cores divided among the replicas)')
    parser.add_argument('--address', help='a running Ray cluster (auto, or '
                        'ray://HEAD:10001); default: a local Ray')
    parser.add_argument('--max-image-bytes', type=int, default=20 * 2**20,
                        help='larger uploads are refused with 413')
    parser.add_argument('--max-pixels', type=int, default=40_000_000,
                        help='larger decoded images are refused with 413')
    parser.add_argument('--scan-interval', type=float, default=1.0,
                        help='seconds between scans of --tasks-dir')
    args = parser.parse_args()
    if args.replicas < 1:
        parser.error('--replicas must be at least 1')
    options = ServeOptions(
        config=args.config, tasks_dir=args.tasks_dir, device=args.device,
        cfg_options=args.cfg_options or None,
        max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
        max_image_bytes=args.max_image_bytes, max_pixels=args.max_pixels,
        scan_interval_s=args.scan_interval)
    start_server(options, args.host, args.port, args.replicas, args.address,
                 args.cpus_per_replica)
    print(f'[vpt_mm serve] ready at http://{args.host}:{args.port} '
          f'({args.replicas} replica(s); API at /docs)', flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    from ray import serve
    serve.shutdown()
    print('[vpt_mm serve] stopped', flush=True)


if __name__ == '__main__':
    main()
