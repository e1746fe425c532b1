{ p=$1; sub("%","",p); s=$0;
  if (s ~ /aws_lc.*(rsaz|bn_|BN_|RSA|extract_multiplier|mod_exp|mont)/ || s ~ /bn_cmp_words|bn_|mulx4x|sqrx8x|sqr8x/) c="rsa";
  else if (s ~ /\[k\]/) c="kernel";
  else if (s ~ /malloc|free|_int_|unlink_chunk|memmove|memset|memcpy|realloc|tcache/) c="libc-alloc/mem";
  else if (s ~ /aes_gcm|aes_|gcm|chacha|sha256|sha2|SHA/) c="tls/hash-crypto";
  else if (s ~ /tokio|mio|futex|parking/) c="tokio";
  else if (s ~ /hyper|http::|h1::/) c="hyper/http";
  else if (s ~ /rustls/) c="rustls";
  else c="other";
  t[c]+=p } END { for (k in t) printf "%-18s %6.2f%%\n", k, t[k] }
