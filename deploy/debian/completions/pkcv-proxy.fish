# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_pkcv_proxy_global_optspecs
    string join \n c/config= h/help V/version
end

function __fish_pkcv_proxy_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_pkcv_proxy_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_pkcv_proxy_using_subcommand
    set -l cmd (__fish_pkcv_proxy_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c pkcv-proxy -n "__fish_pkcv_proxy_needs_command" -s c -l config -d 'Config file (TOML) for `serve` when no subcommand is given' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_needs_command" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_needs_command" -s V -l version -d 'Print version'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_needs_command" -f -a "serve" -d 'Run the proxy (the default)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_needs_command" -f -a "check-config" -d 'Validate the config and keys, and print the effective config'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_needs_command" -f -a "healthcheck" -d 'Exit 0 when the running proxy\'s /readyz answers 200 (for Docker\'s HEALTHCHECK)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_needs_command" -f -a "doctor" -d 'Check the whole setup against Twilio: config, keys, network, clock, and per account a signed call; ✓ or what to do, for each (exit 0 all passed, 2 some not run, 1 failed)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_needs_command" -f -a "explain" -d 'What an error code (790xx, or Twilio\'s) means and what to do about it'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_needs_command" -f -a "completions" -d 'Print shell completions for pkcv-proxy'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_needs_command" -f -a "man" -d 'Print the man page (roff)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_needs_command" -f -a "sign" -d 'Sign one request and print every step, to debug error 70156'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_needs_command" -f -a "keygen" -d 'Generate an RSA key pair for PKCV: as PEM files, or inside an HSM (--pkcs11)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_needs_command" -f -a "subaccount" -d 'Twilio\'s subaccount workflow under PKCV, with the Main API key from the environment (TWILIO_ACCOUNT_SID, TWILIO_MAIN_KEY, TWILIO_MAIN_SECRET)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_needs_command" -f -a "keys" -d 'List an account\'s keys, or rotate its signing key (Main API key from the environment)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_needs_command" -f -a "ca" -d 'The local CA for HTTPS_PROXY interception'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand serve" -s c -l config -d 'Config file (TOML). PKCV_* variables override it, e.g. PKCV_SERVER__LISTEN' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand serve" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand check-config" -s c -l config -d 'Config file (TOML). PKCV_* variables override it, e.g. PKCV_SERVER__LISTEN' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand healthcheck" -s c -l config -d 'Config file (TOML). PKCV_* variables override it, e.g. PKCV_SERVER__LISTEN' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand healthcheck" -l admin -d 'The admin listener (default: server.admin_listen from the config, else 127.0.0.1:9090)' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand healthcheck" -l timeout -d 'Seconds to wait for an answer' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand healthcheck" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand doctor" -s c -l config -d 'Config file (TOML). PKCV_* variables override it, e.g. PKCV_SERVER__LISTEN' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand doctor" -l account -d 'Check only this account (AC…)' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand doctor" -l json -d 'One JSON object per check, one per line (for CI)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand explain" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand completions" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand man" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand sign" -s c -l config -d 'Config file (TOML). PKCV_* variables override it, e.g. PKCV_SERVER__LISTEN' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand sign" -s X -l method -d 'HTTP method' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand sign" -l url -d 'Full URL (https://api.twilio.com/…) or a path as a proxy client would send it' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand sign" -s H -l header -d 'A header, \'Name: value\' (repeatable)' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand sign" -s u -l user -d 'Basic auth credentials \'SK…:secret\' (instead of an Authorization header)' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand sign" -s d -l data -d 'The request body, hashed as is (nothing is sent)' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand sign" -l show-secrets -d 'Print the Authorization value in the canonical string'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand sign" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keygen" -s c -l config -d 'Config file (TOML). PKCV_* variables override it, e.g. PKCV_SERVER__LISTEN' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keygen" -l out-dir -d 'Where to write the key pair (with --pkcs11: only the public key)' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keygen" -l bits -d 'Modulus size: 2048, 3072 or 4096' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keygen" -l name -d 'File name prefix: NAME-private.pem and NAME-public.pem' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keygen" -l pkcs11 -d 'Generate the key inside the HSM this PKCS#11 URI names (object= is the label; the private key is created sensitive and non-extractable). Module and PIN come from the URI\'s module-path and pin-source, or from --config\'s [pkcs11]' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keygen" -l vault-transit -d 'Make the key in Vault\'s (or OpenBao\'s) transit engine under this name (rsa-2048, not exportable; [vault] in --config). An existing key of that name is used, never overwritten' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keygen" -l aws-kms -d 'Make the key in AWS KMS under this alias (alias/NAME; RSA_2048, SIGN_VERIFY; [aws_kms] in --config). An existing alias\'s key is used, never overwritten' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keygen" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and not __fish_seen_subcommand_from create cleanup help" -s c -l config -d 'Config file (TOML). PKCV_* variables override it, e.g. PKCV_SERVER__LISTEN' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and not __fish_seen_subcommand_from create cleanup help" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and not __fish_seen_subcommand_from create cleanup help" -f -a "create" -d 'Create a subaccount, seed it with an API key and a public key, prove a signed request works, and register it with the proxy (accounts_dir)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and not __fish_seen_subcommand_from create cleanup help" -f -a "cleanup" -d 'Delete a subaccount\'s API keys and public key, close it, and unregister it'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and not __fish_seen_subcommand_from create cleanup help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from create" -l friendly-name -d 'The subaccount\'s friendly name' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from create" -l key-dir -d 'Where to write its key pair and secret (default: accounts_dir/keys)' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from create" -l pkcs11 -d 'Generate the key inside the HSM this PKCS#11 URI names (object= is the label; the private key is created sensitive and non-extractable). Module and PIN come from the URI\'s module-path and pin-source, or from --config\'s [pkcs11]' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from create" -l vault-transit -d 'Make the key in Vault\'s (or OpenBao\'s) transit engine under this name (rsa-2048, not exportable; [vault] in --config). An existing key of that name is used, never overwritten' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from create" -l aws-kms -d 'Make the key in AWS KMS under this alias (alias/NAME; RSA_2048, SIGN_VERIFY; [aws_kms] in --config). An existing alias\'s key is used, never overwritten' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from create" -l secret-file -d 'Where to write the new API key secret (0600; default KEY_DIR/AC….secret)' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from create" -s c -l config -d 'Config file (TOML). PKCV_* variables override it, e.g. PKCV_SERVER__LISTEN' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from create" -l reuse-main-key -d 'Seed the main account\'s public key instead of a fresh one (as Twilio\'s guide does)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from create" -l show-secret -d 'Print the secret on stdout instead of writing a file'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from create" -l json -d 'End with one JSON object on stdout\'s last line'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from cleanup" -l account -d 'The subaccount' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from cleanup" -l credential -d 'Its public-key credential, if not registered in accounts_dir' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from cleanup" -s c -l config -d 'Config file (TOML). PKCV_* variables override it, e.g. PKCV_SERVER__LISTEN' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from cleanup" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create a subaccount, seed it with an API key and a public key, prove a signed request works, and register it with the proxy (accounts_dir)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from help" -f -a "cleanup" -d 'Delete a subaccount\'s API keys and public key, close it, and unregister it'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand subaccount; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and not __fish_seen_subcommand_from list rotate help" -s c -l config -d 'Config file (TOML). PKCV_* variables override it, e.g. PKCV_SERVER__LISTEN' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and not __fish_seen_subcommand_from list rotate help" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and not __fish_seen_subcommand_from list rotate help" -f -a "list" -d 'The account\'s API keys and the credential the proxy signs with'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and not __fish_seen_subcommand_from list rotate help" -f -a "rotate" -d 'Generate a new key pair, upload it, verify it, switch signing to it, delete the old one'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and not __fish_seen_subcommand_from list rotate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and __fish_seen_subcommand_from list" -l account -d 'The account' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and __fish_seen_subcommand_from list" -s c -l config -d 'Config file (TOML). PKCV_* variables override it, e.g. PKCV_SERVER__LISTEN' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and __fish_seen_subcommand_from rotate" -l account -d 'The account' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and __fish_seen_subcommand_from rotate" -l key-dir -d 'Where to write the new key pair (default: next to the current key)' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and __fish_seen_subcommand_from rotate" -l pkcs11 -d 'Generate the key inside the HSM this PKCS#11 URI names (object= is the label; the private key is created sensitive and non-extractable). Module and PIN come from the URI\'s module-path and pin-source, or from --config\'s [pkcs11]' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and __fish_seen_subcommand_from rotate" -l vault-transit -d 'Make the key in Vault\'s (or OpenBao\'s) transit engine under this name (rsa-2048, not exportable; [vault] in --config). An existing key of that name is used, never overwritten' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and __fish_seen_subcommand_from rotate" -l aws-kms -d 'Make the key in AWS KMS under this alias (alias/NAME; RSA_2048, SIGN_VERIFY; [aws_kms] in --config). An existing alias\'s key is used, never overwritten' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and __fish_seen_subcommand_from rotate" -l secret-file -d 'The secret of the account\'s API key, to verify the new key with (default: AC….secret next to the current key; not needed for the main account)' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and __fish_seen_subcommand_from rotate" -l grace-secs -d 'Once the running proxy reports the new key, seconds to wait before deleting the old credential, so requests it already signed with the old key reach Twilio first' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and __fish_seen_subcommand_from rotate" -s c -l config -d 'Config file (TOML). PKCV_* variables override it, e.g. PKCV_SERVER__LISTEN' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and __fish_seen_subcommand_from rotate" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "list" -d 'The account\'s API keys and the credential the proxy signs with'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "rotate" -d 'Generate a new key pair, upload it, verify it, switch signing to it, delete the old one'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand ca; and not __fish_seen_subcommand_from init help" -s c -l config -d 'Config file (TOML). PKCV_* variables override it, e.g. PKCV_SERVER__LISTEN' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand ca; and not __fish_seen_subcommand_from init help" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand ca; and not __fish_seen_subcommand_from init help" -f -a "init" -d 'Create a CA (key 0600, name-constrained to Twilio\'s domain, path length 0)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand ca; and not __fish_seen_subcommand_from init help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand ca; and __fish_seen_subcommand_from init" -l out-dir -d 'Where to write pkcv-proxy-ca.pem and pkcv-proxy-ca-key.pem' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand ca; and __fish_seen_subcommand_from init" -l permit -d 'Domains the CA may sign for (X.509 name constraint). Repeatable' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand ca; and __fish_seen_subcommand_from init" -l days -d 'Lifetime of the CA certificate in days' -r
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand ca; and __fish_seen_subcommand_from init" -s c -l config -d 'Config file (TOML). PKCV_* variables override it, e.g. PKCV_SERVER__LISTEN' -r -F
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand ca; and __fish_seen_subcommand_from init" -s h -l help -d 'Print help'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand ca; and __fish_seen_subcommand_from help" -f -a "init" -d 'Create a CA (key 0600, name-constrained to Twilio\'s domain, path length 0)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand ca; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config healthcheck doctor explain completions man sign keygen subaccount keys ca help" -f -a "serve" -d 'Run the proxy (the default)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config healthcheck doctor explain completions man sign keygen subaccount keys ca help" -f -a "check-config" -d 'Validate the config and keys, and print the effective config'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config healthcheck doctor explain completions man sign keygen subaccount keys ca help" -f -a "healthcheck" -d 'Exit 0 when the running proxy\'s /readyz answers 200 (for Docker\'s HEALTHCHECK)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config healthcheck doctor explain completions man sign keygen subaccount keys ca help" -f -a "doctor" -d 'Check the whole setup against Twilio: config, keys, network, clock, and per account a signed call; ✓ or what to do, for each (exit 0 all passed, 2 some not run, 1 failed)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config healthcheck doctor explain completions man sign keygen subaccount keys ca help" -f -a "explain" -d 'What an error code (790xx, or Twilio\'s) means and what to do about it'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config healthcheck doctor explain completions man sign keygen subaccount keys ca help" -f -a "completions" -d 'Print shell completions for pkcv-proxy'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config healthcheck doctor explain completions man sign keygen subaccount keys ca help" -f -a "man" -d 'Print the man page (roff)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config healthcheck doctor explain completions man sign keygen subaccount keys ca help" -f -a "sign" -d 'Sign one request and print every step, to debug error 70156'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config healthcheck doctor explain completions man sign keygen subaccount keys ca help" -f -a "keygen" -d 'Generate an RSA key pair for PKCV: as PEM files, or inside an HSM (--pkcs11)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config healthcheck doctor explain completions man sign keygen subaccount keys ca help" -f -a "subaccount" -d 'Twilio\'s subaccount workflow under PKCV, with the Main API key from the environment (TWILIO_ACCOUNT_SID, TWILIO_MAIN_KEY, TWILIO_MAIN_SECRET)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config healthcheck doctor explain completions man sign keygen subaccount keys ca help" -f -a "keys" -d 'List an account\'s keys, or rotate its signing key (Main API key from the environment)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config healthcheck doctor explain completions man sign keygen subaccount keys ca help" -f -a "ca" -d 'The local CA for HTTPS_PROXY interception'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and not __fish_seen_subcommand_from serve check-config healthcheck doctor explain completions man sign keygen subaccount keys ca help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and __fish_seen_subcommand_from subaccount" -f -a "create" -d 'Create a subaccount, seed it with an API key and a public key, prove a signed request works, and register it with the proxy (accounts_dir)'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and __fish_seen_subcommand_from subaccount" -f -a "cleanup" -d 'Delete a subaccount\'s API keys and public key, close it, and unregister it'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "list" -d 'The account\'s API keys and the credential the proxy signs with'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "rotate" -d 'Generate a new key pair, upload it, verify it, switch signing to it, delete the old one'
complete -c pkcv-proxy -n "__fish_pkcv_proxy_using_subcommand help; and __fish_seen_subcommand_from ca" -f -a "init" -d 'Create a CA (key 0600, name-constrained to Twilio\'s domain, path length 0)'
