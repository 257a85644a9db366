#!/usr/bin/env bash
# The paper's two Memory Maze tables (issue 20): held-out 2,000-step 9x9 exploration episodes from
# the real environment (seeds 830000+, never trained on), `worldmodel eval --protocol
# paper-retrieval` (400 context frames, then their poses replayed in reverse) and `paper-reasoning`
# (576 context frames, then 224 new, with true and with dead-reckoned poses) over the three shipped
# checkpoints and the references, then the tables beside the paper's rows in OUT/tables.md.
# Every eval run is ~4 x 16 x (400 + 224 + 224) World steps: hours on a loaded 2-core CPU.
# Usage: bash scripts/paper_tables.sh   (env: EPISODES=16 STEPS=1 OUT=runs/paper DATA=data/maze9_paper
#        LPIPS=path/to/alexnet-or-lpips-weights REVERSE=turns)
set -euo pipefail
EPISODES=${EPISODES:-16}
STEPS=${STEPS:-1}  # the app's default (one model pass a frame, the commit folded)
OUT=${OUT:-runs/paper}
DATA=${DATA:-data/maze9_paper}
REVERSE=${REVERSE:-turns}
worldmodel generate-data --maze 9x9 --episodes "$EPISODES" --length 2000 --seed 830000 --kind explore \
    --out "$DATA"
CHECKPOINTS=(maze9x9=checkpoints/maze9x9 mamba2_local=checkpoints/maze9x9-mamba2_local
             causal_window=checkpoints/maze9x9-causal_window)
EVAL=(worldmodel eval --checkpoints "${CHECKPOINTS[@]}" --episodes "$DATA" --limit "$EPISODES"
      --steps "$STEPS" --no-progress ${LPIPS:+--lpips-weights "$LPIPS"})
"${EVAL[@]}" --protocol paper-retrieval --reverse-actions "$REVERSE" --out "$OUT/retrieval"
"${EVAL[@]}" --protocol paper-reasoning --out "$OUT/reasoning"
"${EVAL[@]}" --protocol paper-reasoning --dead-reckon --out "$OUT/reasoning-dead-reckon"
python -m worldmodel.eval.paper --retrieval "$OUT/retrieval/results.json" \
    --reasoning "$OUT/reasoning/results.json" --dead-reckoned "$OUT/reasoning-dead-reckon/results.json" \
    --out "$OUT/tables.md"
echo "tables in $OUT/tables.md; PSNR against recall distance in $OUT/retrieval/psnr.png"
