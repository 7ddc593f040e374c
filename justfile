# spae-icl recipes: `cargo install just`, then `just --list` shows them. spae-icl writes under
# ./runs/ by default; the recipes that produce eval/results/ pass --out eval/results/... .

# The main job: the local Gemma 3 classifies the bundled sample by in-context learning.
demo:
    cargo run --release --bin spae-icl -- run

# Tokenize a bundled digit with the default checkpoint.
tokenize:
    cargo run --release --bin spae-icl -- tokenize datasets/samples/mnist-seven.png

# Table 1 (few-shot grid) on Fashion-MNIST with the local Gemma 3; `episodes` per cell. Rows:
# SPAE 2 and 3 layers (built-in checkpoint), the shipped LQAE-style checkpoint, oracle, random.
table1 episodes="100":
    cargo run --release --bin spae-icl -- table1 --task fashion-mnist --episodes {{episodes}} \
        --lqae-checkpoint checkpoints/lqae-gemma3-mnist-fashion.safetensors \
        --out eval/results/table1-fashion-mnist-gemma3-270m

# Open-vocabulary emoji (unseen test concepts, support and query in different drawing styles),
# induction 1 shot, 2- and 5-way, `episodes` per cell: SPAE 2 and 3 layers (the task's built-in emoji
# tokenizer unless CHECKPOINT is given), the words of the teacher `train-emoji` trains against,
# oracle and random words of its codebook.
table1-emoji episodes="400" checkpoint="" out="eval/results/table1-emoji-gemma3-270m":
    cargo run --release --bin spae-icl -- table1 --task emoji --columns 1 --ways 2,5 \
        --episodes {{episodes}} --scoring open,constrained,calibrated \
        --teacher checkpoints/scorer-devise-emoji.safetensors+conse --teacher-image-size 64 \
        {{ if checkpoint == "" { "" } else { "--checkpoint " + checkpoint } }} --out {{out}}

# The emoji teacher's words under the scorer options (`,csls`, `,max-token-id=N`) and the DeViSE
# head alone, each on the val concepts (400 episodes, 2- and 5-way) beside the val oracle, then
# the options once on the test concepts; and the test oracle and teacher rows over every Gemma 3
# word (an untrained checkpoint around all 65,743 entries: oracle and teacher words need no
# encoder). Into eval/results/teacher-emoji.
teacher-emoji:
    for way in 2 5; do \
        for row in plain: csls:,csls csls-common:,csls,max-token-id=100000; do \
            cargo run --release --bin spae-icl -- run --task emoji --split val --words teacher \
                --teacher "checkpoints/scorer-devise-emoji.safetensors+conse${row#*:}" --teacher-image-size 64 \
                --episodes 400 --way $way --scoring constrained,calibrated \
                --out eval/results/teacher-emoji/val-${row%%:*}-${way}way; \
        done; \
        cargo run --release --bin spae-icl -- run --task emoji --split val --words teacher \
            --teacher checkpoints/scorer-devise-emoji.safetensors --teacher-image-size 64 \
            --episodes 400 --way $way --scoring constrained,calibrated \
            --out eval/results/teacher-emoji/val-devise-${way}way; \
        cargo run --release --bin spae-icl -- run --task emoji --words teacher \
            --teacher "checkpoints/scorer-devise-emoji.safetensors+conse,csls,max-token-id=100000" \
            --teacher-image-size 64 --episodes 400 --way $way --scoring open,constrained,calibrated \
            --out eval/results/teacher-emoji/test-csls-common-${way}way; \
    done
    cargo run --release --bin spae-icl -- run --task emoji --split val --words oracle --episodes 400 --way 2 \
        --scoring constrained,calibrated --out eval/results/teacher-emoji/val-oracle-2way
    cargo run --release --bin spae-icl -- init --max-entries 0 --image-size 32 --channels 3 --project-dim 64 \
        --output runs/untrained-gemma3-all-words.safetensors
    cargo run --release --bin spae-icl -- run --task emoji --checkpoint runs/untrained-gemma3-all-words.safetensors \
        --words oracle --episodes 400 --way 2 --scoring constrained,calibrated \
        --out eval/results/teacher-emoji/test-oracle-all-words-2way
    cargo run --release --bin spae-icl -- run --task emoji --checkpoint runs/untrained-gemma3-all-words.safetensors \
        --words teacher --teacher checkpoints/scorer-devise-emoji.safetensors+conse --teacher-image-size 64 \
        --episodes 400 --way 2 --scoring constrained,calibrated \
        --out eval/results/teacher-emoji/test-teacher-all-words-2way

# The DeViSE head's words on the test concepts over the dictionary codebook with and without the
# word list's proper names (`--dictionary wamerican` against `wamerican,lowercase`; untrained
# checkpoints: teacher and oracle words need no encoder), 400 episodes, 2- and 5-way, and the
# 2-way oracle of each codebook. Into eval/results/teacher-emoji.
teacher-emoji-lowercase:
    for dict in wamerican wamerican,lowercase; do \
        name=$(echo $dict | tr , -); ckpt=runs/untrained-gemma3-$name.safetensors; \
        cargo run --release --bin spae-icl -- init --max-entries 0 --dictionary $dict --image-size 32 --channels 3 \
            --project-dim 64 --output $ckpt; \
        for way in 2 5; do \
            cargo run --release --bin spae-icl -- run --task emoji --checkpoint $ckpt \
                --words teacher --teacher devise-emoji --teacher-image-size 64 \
                --episodes 400 --way $way --scoring constrained,calibrated \
                --out eval/results/teacher-emoji/test-devise-$name-${way}way; \
        done; \
        cargo run --release --bin spae-icl -- run --task emoji --checkpoint $ckpt \
            --words oracle --episodes 400 --way 2 --scoring constrained,calibrated \
            --out eval/results/teacher-emoji/test-oracle-$name-2way; \
    done

# Naming unseen emoji concepts in context (16 captioned train-concept emoji, then a test emoji's
# words), `items` test images: the built-in emoji tokenizer's words, then the rows that bound
# them: the words of the teacher `train-emoji` trains against, oracle and random words.
caption-emoji items="300":
    cargo run --release --bin spae-icl -- eval-vqa --task emoji-caption --limit {{items}} \
        --out eval/results/caption-emoji-gemma3-270m
    cargo run --release --bin spae-icl -- eval-vqa --task emoji-caption --limit {{items}} \
        --words teacher --teacher checkpoints/scorer-devise-emoji.safetensors+conse \
        --teacher-image-size 64 --out eval/results/caption-emoji-gemma3-270m-teacher
    cargo run --release --bin spae-icl -- eval-vqa --task emoji-caption --limit {{items}} \
        --words oracle --out eval/results/caption-emoji-gemma3-270m-oracle
    cargo run --release --bin spae-icl -- eval-vqa --task emoji-caption --limit {{items}} \
        --words random --out eval/results/caption-emoji-gemma3-270m-random

# The emoji scorer (shipped as checkpoints/scorer-minilm-emoji.safetensors): the tower trained on
# the train concepts' names against the frozen MiniLM, scored zero-shot on the val concepts (which
# chose 600 steps among 250/400/600/1500) and on the test concepts it never saw.
scorer-emoji steps="600":
    cargo run --release --bin spae-icl -- train-scorer --data emoji --image-size 32 --channels 3 \
        --steps {{steps}} --batch-size 128 --lr 3e-3 --out runs/scorer-emoji.safetensors
    mkdir -p eval/results/scorer-emoji
    cargo run --release --bin spae-icl -- scorer-report --scorer runs/scorer-emoji.safetensors \
        --data emoji-val --image-size 32 --channels 3 --words 8 > eval/results/scorer-emoji/report-val.jsonl
    cargo run --release --bin spae-icl -- scorer-report --scorer runs/scorer-emoji.safetensors \
        --data emoji --image-size 32 --channels 3 --words 8 > eval/results/scorer-emoji/report.jsonl

# The emoji tokenizer's teacher beside its members: ConSE over MobileNetV2's ImageNet classes
# (`conse`), and the shipped emoji tower and ConSE together, both reading 64x64 images.
scorer-emoji-teachers:
    mkdir -p eval/results/scorer-emoji
    cargo run --release --bin spae-icl -- scorer-report --scorer checkpoints/scorer-minilm-emoji.safetensors@32+conse \
        --data emoji-val --image-size 64 --channels 3 --words 8 > eval/results/scorer-emoji/report-val-ensemble.jsonl
    cargo run --release --bin spae-icl -- scorer-report --scorer checkpoints/scorer-minilm-emoji.safetensors@32+conse \
        --data emoji --image-size 64 --channels 3 --words 8 > eval/results/scorer-emoji/report-ensemble.jsonl
    cargo run --release --bin spae-icl -- scorer-report --scorer conse \
        --data emoji --image-size 64 --channels 3 --words 8 > eval/results/scorer-emoji/report-conse.jsonl

# The DeViSE emoji scorer (shipped as checkpoints/scorer-devise-emoji.safetensors): a linear head
# over frozen ImageNet MobileNetV2 features (64x64 emoji read at 224) trained on the train concepts'
# names; 500 steps chosen on the val concepts against 1500. Scored zero-shot alone and with ConSE
# on the val concepts and on the test concepts it never saw.
scorer-emoji-devise steps="500":
    cargo run --release --bin spae-icl -- train-scorer --data emoji --image-size 64 --channels 3 --arch devise \
        --steps {{steps}} --batch-size 128 --lr 2e-3 --out runs/scorer-devise-emoji.safetensors
    mkdir -p eval/results/scorer-emoji
    for d in emoji-val emoji; do \
        for s in "" "+conse"; do \
            cargo run --release --bin spae-icl -- scorer-report --scorer runs/scorer-devise-emoji.safetensors$s \
                --data $d --image-size 64 --channels 3 --words 8 \
                > eval/results/scorer-emoji/report$([ $d = emoji-val ] && echo -val)-devise$([ -n "$s" ] && echo -conse).jsonl; \
        done; \
    done

# Retrain the emoji tokenizer (built in as checkpoints/spae-gemma3-emoji.safetensors): the train
# concepts at 32x32 RGB, every dictionary word of Gemma 3 plus the train names' words, an encoder
# that also reads frozen MobileNetV2 features (at 128x128), taught by DeViSE and ConSE together.
train-emoji:
    cargo run --release --bin spae-icl -- train --data emoji --image-size 32 --channels 3 --project-dim 64 \
        --max-entries 0 --dictionary wamerican --include-class-words --backbone-size 128 \
        --scorer checkpoints/scorer-devise-emoji.safetensors+conse --scorer-image-size 64 \
        --semantic-weight 0.5 --steps 1500 --batch-size 32 --lr 1e-3 --warmup 100 --semantic-ramp 300 --checkpoint-every 250 \
        --out runs/spae-emoji

# The emoji tokenizer whose encoder starts from its teacher's relevance-weighted codebook rows
# (`--prior`; not built in, checkpoints/README.md says why), into runs/spae-emoji-prior.
train-emoji-prior temperature="0.01":
    cargo run --release --bin spae-icl -- train --data emoji --image-size 32 --channels 3 --project-dim 64 \
        --max-entries 0 --dictionary wamerican --include-class-words --backbone-size 128 \
        --scorer devise-emoji+conse --scorer-image-size 64 \
        --prior devise-emoji+conse --prior-temperature {{temperature}} \
        --semantic-weight 0.5 --steps 1500 --batch-size 32 --lr 1e-3 --warmup 100 --semantic-ramp 300 --checkpoint-every 250 \
        --out runs/spae-emoji-prior

# The same with the DeViSE head alone as teacher and prior, the tokenizer reading the emoji at
# SIZE x SIZE (32 or 64; not built in, checkpoints/README.md says why), into
# runs/spae-emoji-prior-devise-SIZE.
train-emoji-prior-devise size="32":
    cargo run --release --bin spae-icl -- train --data emoji --image-size {{size}} --channels 3 --project-dim 64 \
        --max-entries 0 --dictionary wamerican --include-class-words --backbone-size 128 \
        --scorer devise-emoji --scorer-image-size 64 --prior devise-emoji --prior-temperature 0.01 \
        --semantic-weight 0.5 --steps 1500 --batch-size 32 --lr 1e-3 --warmup 100 --semantic-ramp 300 --checkpoint-every 250 \
        --out runs/spae-emoji-prior-devise-{{size}}

# The emoji tokenizer taught the same words for every drawing style of a train concept
# (`--semantic-per-class`; not built in, checkpoints/README.md says why), into
# runs/spae-emoji-per-class (runs/spae-emoji-per-class-sSEED for another seed).
train-emoji-per-class seed="0":
    cargo run --release --bin spae-icl -- train --data emoji --image-size 32 --channels 3 --project-dim 64 \
        --max-entries 0 --dictionary wamerican --include-class-words --backbone-size 128 \
        --scorer checkpoints/scorer-devise-emoji.safetensors+conse --scorer-image-size 64 --semantic-per-class \
        --semantic-weight 0.5 --steps 1500 --batch-size 32 --lr 1e-3 --warmup 100 --semantic-ramp 300 --checkpoint-every 250 \
        --seed {{seed}} --out runs/spae-emoji-per-class{{ if seed == "0" { "" } else { "-s" + seed } }}

# Reconstruction and relevance per pyramid depth: the shipped SPAE and LQAE-style checkpoints.
table-tokenizer:
    cargo run --release --bin spae-icl -- table-tokenizer --checkpoint SPAE=builtin \
        --checkpoint SPAE-fd=checkpoints/spae-gemma3-mnist-fashion-fd.safetensors \
        --checkpoint SPAE-d64=checkpoints/spae-gemma3-mnist-fashion-d64.safetensors \
        --checkpoint LQAE-style=checkpoints/lqae-gemma3-mnist-fashion.safetensors \
        --checkpoint SPAE-SmolLM2=checkpoints/spae-smollm2-mnist-fashion.safetensors \
        --out eval/results/tokenizer
    cargo run --release --bin spae-icl -- plot depth --results eval/results/tokenizer

# SAQ vs RQ, semantic loss on/off, pyramid vs flat: each trained for `steps`, then scored.
ablations steps="300" episodes="30" dim="64":
    cargo run --release --bin spae-icl -- ablations --steps {{steps}} --episodes {{episodes}} --project-dim {{dim}} --out eval/results/ablations

# Denoising and inpainting MNIST digits in context (10 pairs, 3 layers, `count` test images).
image-to-image count="12":
    cargo run --release --bin spae-icl -- image-to-image --task denoise --count {{count}} --out eval/results/denoise-mnist-gemma3-270m
    cargo run --release --bin spae-icl -- image-to-image --task inpaint --count {{count}} --out eval/results/inpaint-mnist-gemma3-270m

# Retrain the shipped scorer and tokenizer (Gemma 3 vocabulary, MNIST + Fashion-MNIST) into runs/:
# the paper's recipe (4,500 steps), then 5,000 steps that grow the pyramid by two full-resolution
# layers and the decoder by two blocks and train the decoder alone, keeping every word (the
# built-in checkpoint is runs/spae-gemma3-decoder/checkpoint.safetensors).
train-default:
    cargo run --release --bin spae-icl -- train-scorer --data mnist+fashion-mnist --steps 250 --batch-size 128 --lr 3e-3 --out runs/scorer.safetensors
    cargo run --release --bin spae-icl -- train --data mnist+fashion-mnist --project-dim 16 --scorer runs/scorer.safetensors --steps 4500 --batch-size 32 --lr 2e-3 --warmup 100 --semantic-ramp 300 --checkpoint-every 500 --out runs/spae-gemma3
    cargo run --release --bin spae-icl -- train --init runs/spae-gemma3/checkpoint.safetensors --freeze-encoder --add-layers 8,8 --dec-blocks 3 --fine-blocks 2 --data mnist+fashion-mnist --steps 5000 --batch-size 32 --lr 1e-3 --warmup 50 --full-depth-share 0.5 --checkpoint-every 500 --out runs/spae-gemma3-decoder

# The dictionary-codebook probe of checkpoints/README.md: the built-in's phase 1 with every Gemma 3
# word of Debian's wamerican list as codebook (30,732 entries), then Table 1's 1-shot column with it.
probe-dictionary:
    cargo run --release --bin spae-icl -- train --data mnist+fashion-mnist --project-dim 16 --scorer checkpoints/scorer-minilm-mnist-fashion.safetensors --max-entries 0 --dictionary wamerican --include-class-words --steps 4500 --batch-size 32 --lr 2e-3 --warmup 100 --semantic-ramp 300 --checkpoint-every 500 --out runs/spae-gemma3-dict
    cargo run --release --bin spae-icl -- table1 --task fashion-mnist --columns 1 --episodes 100 --checkpoint runs/spae-gemma3-dict/checkpoint.safetensors --out eval/results/table1-fashion-mnist-1shot-dictionary

# Train the full-depth variant of checkpoints/README.md (not built in): half the steps at full depth, 10,000 steps.
train-fd:
    cargo run --release --bin spae-icl -- train --data mnist+fashion-mnist --project-dim 16 --scorer checkpoints/scorer-minilm-mnist-fashion.safetensors --steps 10000 --batch-size 32 --lr 2e-3 --warmup 100 --semantic-ramp 300 --full-depth-share 0.5 --checkpoint-every 500 --out runs/spae-gemma3-fd

# The projection probe of checkpoints/README.md: 600 steps at 8, 16, 32, 64 dims, scored on MNIST test.
probe-project-dim:
    for d in 8 16 32 64; do \
        cargo run --release --bin spae-icl -- train --data mnist+fashion-mnist --project-dim $d --scorer checkpoints/scorer-minilm-mnist-fashion.safetensors --steps 600 --batch-size 32 --lr 2e-3 --warmup 100 --semantic-ramp 300 --checkpoint-every 600 --out runs/probe-d$d && \
        cargo run --release --bin spae-icl -- eval-tokenizer --checkpoint runs/probe-d$d/checkpoint.safetensors --data mnist --split test --limit 500 --scorer checkpoints/scorer-minilm-mnist-fashion.safetensors; \
    done

# The full-depth share probe of checkpoints/README.md: 600 steps with 0 and half the steps at full depth.
probe-full-depth-share:
    for s in 0 0.5; do \
        cargo run --release --bin spae-icl -- train --data mnist+fashion-mnist --project-dim 16 --scorer checkpoints/scorer-minilm-mnist-fashion.safetensors --steps 600 --batch-size 32 --lr 2e-3 --warmup 100 --semantic-ramp 300 --full-depth-share $s --checkpoint-every 600 --out runs/probe-share$s && \
        cargo run --release --bin spae-icl -- eval-tokenizer --checkpoint runs/probe-share$s/checkpoint.safetensors --data mnist --split test --limit 500 --scorer checkpoints/scorer-minilm-mnist-fashion.safetensors; \
    done

# The growth probe of checkpoints/README.md: 800 decoder-only steps from the earlier built-in
# checkpoint 414ea9e04a1f (taken from git at c70fdd7), each way of growing the model against none,
# scored on MNIST test.
probe-grow:
    mkdir -p runs && git show c70fdd7:checkpoints/spae-gemma3-mnist-fashion.safetensors > runs/builtin-c70fdd7.safetensors
    for g in "--decoder-input layers" "--fine-blocks 2" "--dec-blocks 3 --fine-blocks 2" "--add-layers 8" "--add-layers 8,8" "--add-layers 8 --dec-blocks 3 --fine-blocks 2"; do \
        o="runs/probe-grow-$(echo $g | tr -d ' -')" && \
        cargo run --release --bin spae-icl -- train --init runs/builtin-c70fdd7.safetensors --freeze-encoder $g --data mnist+fashion-mnist --steps 800 --batch-size 32 --lr 1e-3 --warmup 50 --full-depth-share 0.5 --checkpoint-every 800 --out $o && \
        cargo run --release --bin spae-icl -- eval-tokenizer --checkpoint $o/checkpoint.safetensors --data mnist --split test --limit 500; \
    done

# The decoder-phase probe of checkpoints/README.md: 800 decoder-only steps from the earlier built-in
# checkpoint 414ea9e04a1f (taken from git at c70fdd7) with 0.5 and 0 of the steps at full depth,
# scored on MNIST test.
probe-decoder-phase:
    mkdir -p runs && git show c70fdd7:checkpoints/spae-gemma3-mnist-fashion.safetensors > runs/builtin-c70fdd7.safetensors
    for s in 0.5 0; do \
        cargo run --release --bin spae-icl -- train --init runs/builtin-c70fdd7.safetensors --freeze-encoder --data mnist+fashion-mnist --steps 800 --batch-size 32 --lr 1e-3 --warmup 50 --full-depth-share $s --checkpoint-every 800 --out runs/probe-dec$s && \
        cargo run --release --bin spae-icl -- eval-tokenizer --checkpoint runs/probe-dec$s/checkpoint.safetensors --data mnist --split test --limit 500; \
    done
    cargo run --release --bin spae-icl -- eval-tokenizer --checkpoint runs/builtin-c70fdd7.safetensors --data mnist --split test --limit 500

# Retrain the shipped LQAE-style baseline: one flat 8x8 layer, no semantic loss, same budget; a
# codebook-usage term keeps its encoder from collapsing onto a few entries of the frozen codebook.
train-lqae:
    cargo run --release --bin spae-icl -- train --data mnist+fashion-mnist --layers 8 --project-dim 64 --scorer none --usage-weight 0.1 --usage-tau 0.1 --steps 2000 --batch-size 32 --lr 2e-3 --warmup 100 --checkpoint-every 250 --out runs/lqae-gemma3

# Retrain the shipped easy-VQA scorer and tokenizer into runs/: a DeViSE scorer over MobileNetV2 features
# (colour + shape captions), and a 32x32 RGB tokenizer whose encoder reads the same features.
train-easy-vqa:
    cargo run --release --bin spae-icl -- train-scorer --data easy-vqa --image-size 64 --channels 3 --arch devise \
        --steps 500 --batch-size 128 --lr 2e-3 --out runs/scorer-devise-easy-vqa.safetensors
    cargo run --release --bin spae-icl -- train --data easy-vqa --image-size 32 --channels 3 --project-dim 64 \
        --dictionary wamerican --include-class-words --backbone-size 128 \
        --scorer runs/scorer-devise-easy-vqa.safetensors --scorer-image-size 64 \
        --semantic-weight 0.5 --steps 1500 --batch-size 32 --lr 1e-3 --warmup 100 --semantic-ramp 300 --checkpoint-every 250 \
        --out runs/spae-easy-vqa

# The ceiling of easy-VQA VQA for the local Gemma 3: every image read as its true colour and shape.
eval-vqa-oracle limit="300":
    cargo run --release --bin spae-icl -- eval-vqa --task vqa --limit {{limit}} --words oracle --out eval/results/vqa-easy-vqa-gemma3-270m-oracle

# Retrain the SmolLM2-vocabulary tokenizer (MNIST + Fashion-MNIST, the shipped scorer).
train-smollm2:
    cargo run --release --bin spae-icl -- train --vocab smollm2-135m --project-dim 64 --data mnist+fashion-mnist --scorer checkpoints/scorer-minilm-mnist-fashion.safetensors --steps 2000 --batch-size 32 --lr 2e-3 --warmup 100 --semantic-ramp 300 --checkpoint-every 250 --out runs/spae-smollm2

# VQA and captioning on easy-VQA's test split by the local Gemma 3 (built-in easy-VQA tokenizer).
eval-vqa limit="1000" captions="150":
    cargo run --release --bin spae-icl -- eval-vqa --task vqa --limit {{limit}} --out eval/results/vqa-easy-vqa-gemma3-270m
    cargo run --release --bin spae-icl -- eval-vqa --task caption --limit {{captions}} --out eval/results/caption-easy-vqa-gemma3-270m

# The test suite, as CI runs it.
test:
    cargo test --workspace

# Formatting and lints, as the style guide asks.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Fetch and verify the LLM files into $SPAE_HOME.
fetch:
    cargo run --release --bin spae-icl -- fetch gemma3-270m smollm2-135m

# Codebook sizes for both LLM vocabularies under the default filter.
vocab:
    cargo run --release --bin spae-icl -- vocab --vocab gemma3-270m
    cargo run --release --bin spae-icl -- vocab --vocab smollm2-135m

# The 1-shot, induction column of Table 1 at 100 episodes (2- and 5-way; SPAE 2 and 3 layers,
# oracle and random words; open, constrained and calibrated scoring).
report-1shot:
    cargo run --release --bin spae-icl -- table1 --task fashion-mnist --columns 1 --episodes 100 --out eval/results/fashion-mnist-1shot-gemma3-270m

# Digits drawn by the local Gemma 3, scored by the shipped judge beside random and copy baselines.
eval-generate count="10" layers="3":
    cargo run --release --bin spae-icl -- eval-generate --count {{count}} --layers {{layers}} --out eval/results/generate-mnist-gemma3-270m

# The built-in tokenizer (seed 1; seed 0 is eval-generate) against the full-depth variant and the
# earlier built-in checkpoints 414ea9e04a1f (taken from git at c70fdd7) and 7aad6295695f (taken
# from git at fd467c8), seeds 0 and 1 (eval/README.md).
eval-generate-fd:
    cargo run --release --bin spae-icl -- eval-generate --count 10 --layers 3 --seed 1 --out eval/results/generate-mnist-gemma3-270m-seed1
    for s in 0 1; do cargo run --release --bin spae-icl -- eval-generate --count 10 --layers 3 --seed $s --checkpoint checkpoints/spae-gemma3-mnist-fashion-fd.safetensors --out eval/results/generate-mnist-gemma3-270m-fd-seed$s; done
    mkdir -p runs && git show c70fdd7:checkpoints/spae-gemma3-mnist-fashion.safetensors > runs/builtin-c70fdd7.safetensors
    cargo run --release --bin spae-icl -- eval-generate --count 10 --layers 3 --checkpoint runs/builtin-c70fdd7.safetensors --out eval/results/generate-mnist-gemma3-270m-s5
    cargo run --release --bin spae-icl -- eval-generate --count 10 --layers 3 --seed 1 --checkpoint runs/builtin-c70fdd7.safetensors --out eval/results/generate-mnist-gemma3-270m-s5-seed1
    git show fd467c8:checkpoints/spae-gemma3-mnist-fashion.safetensors > runs/builtin-fd467c8.safetensors
    cargo run --release --bin spae-icl -- eval-generate --count 10 --layers 3 --checkpoint runs/builtin-fd467c8.safetensors --out eval/results/generate-mnist-gemma3-270m-s7
    cargo run --release --bin spae-icl -- eval-generate --count 10 --layers 3 --seed 1 --checkpoint runs/builtin-fd467c8.safetensors --out eval/results/generate-mnist-gemma3-270m-s7-seed1

# Retrain the shipped digit judge.
train-judge:
    cargo run --release --bin spae-icl -- train-judge --epochs 4 --out checkpoints/judge-mnist.safetensors

# Figures: accuracy curves of the measured Table 1 grid, PSNR per depth, and the pyramid of MNIST digits.
plots:
    cargo run --release --bin spae-icl -- plot table1 --results eval/results/table1-fashion-mnist-gemma3-270m
    cargo run --release --bin spae-icl -- plot depth --results eval/results/tokenizer
    cargo run --release --bin spae-icl -- plot pyramid -o eval/results/pyramid-mnist.png
