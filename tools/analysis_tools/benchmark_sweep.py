"""How much faster a sweep runs with several jobs at once: the same tiny
sweep (VTAB-1k dmlab on generated data, a random DeiT-tiny-sized prompted
ViT, 6 grid points + 2 seeds) one job at a time (torch's default threads,
then T = cores / N threads) and with ``--jobs N`` (T threads each), timed
in one process; the outputs of the two runs with T threads are compared
(the thread count changes float rounding).

Example:
    python tools/analysis_tools/benchmark_sweep.py --jobs 2
"""
import argparse
import filecmp
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
COMPARED = ('records.json', 'hparams.json', 'results.md',
            osp.join('dmlab', 'best.json'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--jobs', type=int, default=os.cpu_count() or 2,
                        help='concurrent jobs (default: the CPU cores)')
    parser.add_argument('--epochs', type=int, default=5)
    args = parser.parse_args()
    from vpt_mm.datasets.synthetic import make_vtab_task
    with tempfile.TemporaryDirectory() as tmp:
        make_vtab_task(osp.join(tmp, 'vtab'), 'dmlab', train=1, val=1,
                       test=1)
        times, works = {}, {}
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        for label, extra in (
                ('one at a time, default threads', []),
                (f'one at a time, {threads} thread(s)',
                 ['--threads-per-job', str(threads)]),
                (f'--jobs {args.jobs}, {threads} thread(s) each',
                 ['--jobs', str(args.jobs)])):
            work = osp.join(tmp, f'run{len(works)}')
            works[label] = work
            cmd = [
                sys.executable, osp.join(REPO, 'tools', 'sweep.py'),
                osp.join(REPO, 'configs', 'vtab', 'vpt_deep_vit-b.py'),
                '--tasks', 'dmlab', '--num-tokens', '10', '--lrs', '1',
                '0.5', '0.1', '--wds',
                '0.01', '0', '--seeds', '2', '--work-dir', work, *extra,
                '--cfg-options', f'data_root={osp.join(tmp, "vtab")}',
                'model.backbone.init_cfg=None',
                'model.backbone.arch=deit-tiny', 'model.head.in_channels=192',
                f'train_cfg.max_epochs={args.epochs}',
                'train_dataloader.num_workers=0',
                'train_dataloader.persistent_workers=False',
                'test_dataloader.num_workers=0',
                'test_dataloader.persistent_workers=False'
            ]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env=dict(os.environ, PYTHONPATH=REPO))
            times[label] = time.perf_counter() - start
            if proc.returncode != 0:
                sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])
        pair = list(works.values())[1:]
        same = all(filecmp.cmp(osp.join(pair[0], f), osp.join(pair[1], f),
                               shallow=False) for f in COMPARED)
    print(f'machine: {os.cpu_count()} CPU cores; 8 jobs (6 grid points, '
          f'2 seeds), {args.epochs} epochs each')
    base = next(iter(times.values()))
    for label, seconds in times.items():
        print(f'{label:<34} {seconds:6.1f} s  speed-up {base / seconds:.2f}x')
    print('best.json, records, hparams and results of the two runs with '
          f'{threads} thread(s) per job identical: {same}')
    if not same:
        sys.exit('the concurrent sweep wrote other results')


if __name__ == '__main__':
    main()
