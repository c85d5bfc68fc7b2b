"""Graded checks: each test cell of an exercise passes the student's function to one of these.

`check_cosine_similarity(cosine_similarity)` runs the student's function on seeded inputs, turns the
result into plain data and compares it with the reference in `llmcourse`: type, shape and NaN first,
then values with a stated tolerance; a wrong answer is matched against typical mistakes so the message can
name the one that was made. The machinery is in `core`; each chapter's checks are in a module of the same
name as its reference module (`checks.tokens` for `llmcourse.tokens`).

Explained in: the exercise notebooks (exercises/NN_topic), one check per graded function.
"""
from llmcourse.checks.core import ATOL, REGISTRY, RTOL, Check, CheckFailed  # noqa: F401
from llmcourse.checks.tokens import (check_count_pairs, check_cosine_similarity, check_decode, check_encode,  # noqa: F401
                                     check_merge, check_sinusoidal_positions, check_train_bpe)
from llmcourse.checks.vectors import (check_analogy, check_evaluate_analogies, check_negative_distribution,  # noqa: F401
                                      check_sgns_gradients, check_sgns_loss, check_train, check_train_step)
from llmcourse.checks.attention import (check_causal_mask, check_find_name_mover,  # noqa: F401
                                        check_find_name_mover_in_model, check_merge_heads,
                                        check_multi_head_attention, check_scaled_dot_product_attention, check_split_heads)
from llmcourse.checks.ffn import (check_ablate_memories, check_ffn, check_find_fact_memories,  # noqa: F401
                                  check_find_memories_in_model, check_key_activations, check_promoted_tokens,
                                  check_weighted_values)
from llmcourse.checks.gpt import (check_block_forward, check_count_params, check_generate_greedy_cached,  # noqa: F401
                                  check_next_token_distribution, check_sample)
from llmcourse.checks.train import (check_adam_step, check_cross_entropy, check_linear_softmax_backward,  # noqa: F401
                                    check_sgd_step, check_train_bigram)
from llmcourse.checks.scaling import (check_compute_optimal, check_fit_power_law, check_fit_saturating,  # noqa: F401
                                      check_training_flops)
from llmcourse.checks.yourgpt import (check_adamw_step, check_gpt_logits, check_gqa_attention,  # noqa: F401,E402
                                      check_llama_forward, check_rms_norm, check_rope, check_smollm2_logits,
                                      check_swiglu, check_train_gpt)
