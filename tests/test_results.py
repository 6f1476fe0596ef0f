"""results/ (CSV + Markdown) agrees with model_cards/, and goes stale when a card changes."""
import csv
import shutil

from huggingface_hub import metadata_load

from macrl_hub.results import ROOT, main, results_rows

CARDS = ROOT / 'model_cards'


def test_committed_results_agree_with_the_cards():
    assert main(['--check']) == 0, 'results/ is stale: run `python -m macrl_hub.results`'
    rows = list(csv.DictReader((ROOT / 'results' / 'results-macrl.csv').open()))
    assert sorted(r['model'] for r in rows) == sorted(d.name for d in CARDS.iterdir() if (d / 'README.md').is_file())
    for r in rows:  # read back independently of macrl_hub.results: the card's own metadata
        metrics = {m['name']: m['value'] for m in
                   metadata_load(CARDS / r['model'] / 'README.md')['model-index'][0]['results'][0]['metrics']}
        assert float(r['knn_top1_k200']) == metrics['kNN top-1 (k=200)']
        assert float(r['linear_top1']) == metrics['linear probe top-1']
        assert r['pretrain_min'] and r['pretrain_hardware'] and float(r['param_count_m']) > 1


def test_a_changed_card_makes_results_stale(tmp_path):
    cards = tmp_path / 'cards'
    for d in CARDS.iterdir():
        if (d / 'README.md').is_file():
            (cards / d.name).mkdir(parents=True)
            shutil.copy(d / 'README.md', cards / d.name / 'README.md')
    out = tmp_path / 'results'
    assert main(['--cards', str(cards), '--out', str(out)]) == 0
    assert main(['--cards', str(cards), '--out', str(out), '--check']) == 0
    name = sorted(p.name for p in cards.iterdir())[0]
    card = cards / name / 'README.md'
    old = metadata_load(card)['model-index'][0]['results'][0]['metrics'][1]['value']  # kNN k=200
    card.write_text(card.read_text().replace(f'value: {old}\n', 'value: 12.34\n', 1))
    assert main(['--cards', str(cards), '--out', str(out), '--check']) == 1
    row = next(r for r in results_rows(cards) if r['model'] == name)
    assert row['knn_top1_k200'] == 12.34


def test_a_fine_tune_on_a_card_reaches_results_with_its_epochs(tmp_path):
    """The card names a fine-tune 'fine-tune top-1 (N epochs)' (a short one is not the paper's): results keeps both."""
    import dataclasses
    import timm
    from macrl_hub.card import write_model_card
    from macrl_hub.config import TrainConfig
    from macrl_hub.export import plain_timm_config
    from macrl_hub.results import card_row, render_markdown
    name = 'macrl_vit_tiny_p4_cifar.cifar10'
    config = plain_timm_config(timm.create_model('macrl_vit_tiny_p4_cifar', depth=1), 'macrl_vit_tiny_p4_cifar',
                               {'depth': 1}, 'cifar10')
    ck = {'config': dataclasses.asdict(TrainConfig()), 'step': 10, 'train_time': 60.0, 'hardware': 'a CPU'}
    evals = [{'eval': 'knn+linear', 'knn_top1_k200': 41.0, 'linear_top1': 50.0, 'n_test': 10000},
             {'eval': 'finetune', 'finetune_top1': 62.81, 'finetune_epochs': 5, 'n_test': 10000}]
    write_model_card(tmp_path / name, name, config, ck, evals, [{'event': 'end', 'step': 10, 'epochs': 1.0}])
    row = card_row(tmp_path / name)
    assert row['finetune_top1'] == 62.81 and row['finetune_epochs'] == 5 and row['linear_top1'] == 50.0
    assert '| 62.81 (5 epochs) |' in render_markdown([row])


def test_every_metric_a_card_writes_is_read_back_into_its_column():
    """card.metric_name writes the names, results parses them back: one table (card.METRIC_NAMES) for both."""
    from macrl_hub.card import METRIC_NAMES, metric_name, parse_metric_name
    from macrl_hub.results import COLUMNS, FIELDS
    for key in METRIC_NAMES:
        assert parse_metric_name(metric_name(key, {})) == (key, None)
        assert COLUMNS[key] in FIELDS
    assert parse_metric_name(metric_name('finetune_top1', {'finetune_epochs': 12})) == ('finetune_top1', 12)
    assert parse_metric_name('accuracy') is None and parse_metric_name('kNN top-1 (k=50)') is None
