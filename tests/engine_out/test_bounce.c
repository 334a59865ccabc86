/*
 * test_bounce.c - bounce classification: a corpus of real-world replies
 * (Gmail, Microsoft 365 / Outlook.com, Yahoo/AOL, iCloud, Postfix, Exim,
 * qmail, Mimecast, Comcast, Yandex, Mail.ru) each with the category an
 * operator expects, the KumoMTA iana.toml reference lines
 * (reliability.md DSN-05), site overrides taking precedence, the override
 * file parser and its errors with line numbers, and that docs/bounces.md
 * shows the built-in rules verbatim.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/eng_bounce.h"

static struct eng_bounce_table table;

static void
table_setup(void)
{
	eng_bounce_table_init(&table);
}

#define E(c, s, d) { (c), (s), (d) }
#define NONE { 0, 0, 0 }

struct corpus_case {
	uint16_t code;
	struct eng_enhanced enhanced;
	enum eng_bounce_category want;
	const char *text;
};

/* clang-format off */
static const struct corpus_case corpus[] = {
	/* Gmail */
	{ 550, E(5, 1, 1), ENG_BOUNCE_BAD_MAILBOX,
	  "The email account that you tried to reach does not exist. Please try "
	  "double-checking the recipient's email address for typos or unnecessary spaces. For "
	  "more information, go to https://support.google.com/mail/?p=NoSuchUser" },
	{ 550, E(5, 2, 1), ENG_BOUNCE_INACTIVE_MAILBOX,
	  "The email account that you tried to reach is inactive. For more information, go to "
	  "https://support.google.com/mail/?p=DisabledUser" },
	{ 552, E(5, 2, 2), ENG_BOUNCE_QUOTA,
	  "The recipient's inbox is out of storage space. Please direct the recipient to "
	  "https://support.google.com/mail/?p=OverQuotaPerm" },
	{ 452, E(4, 2, 2), ENG_BOUNCE_QUOTA,
	  "The recipient's inbox is out of storage space and inbound mail cannot be delivered. "
	  "Please try resending later. https://support.google.com/mail/?p=OverQuotaTemp" },
	{ 552, E(5, 3, 4), ENG_BOUNCE_MESSAGE_TOO_LARGE,
	  "Your message exceeded Google's message size limits. For more information, go to "
	  "https://support.google.com/mail/?p=MaxSizeError" },
	{ 550, E(5, 7, 1), ENG_BOUNCE_SPAM_RELATED,
	  "[203.0.113.5] Gmail has detected that this message is likely unsolicited mail. To "
	  "reduce the amount of spam sent to Gmail, this message has been blocked. For more "
	  "information, go to https://support.google.com/mail/?p=UnsolicitedMessageError" },
	{ 550, E(5, 7, 1), ENG_BOUNCE_SPAM_RELATED,
	  "[203.0.113.5] Our system has detected that this message is\n5.7.1 likely "
	  "unsolicited mail. To reduce the amount of spam sent to Gmail,\n5.7.1 this message "
	  "has been blocked." },
	{ 550, E(5, 7, 26), ENG_BOUNCE_POLICY_RELATED,
	  "This mail has been blocked because the sender is unauthenticated. Gmail requires "
	  "all senders to authenticate with either SPF or DKIM. Authentication results: DKIM = "
	  "did not pass SPF [example.org] with ip: [203.0.113.5] = did not pass" },
	{ 550, E(5, 7, 25), ENG_BOUNCE_POLICY_RELATED,
	  "[203.0.113.5] The IP address sending this message does not have a PTR record setup, "
	  "or the corresponding forward DNS entry does not point to the sending IP. As a "
	  "policy, Gmail does not accept messages from IPs with missing PTR records." },
	{ 421, E(4, 7, 0), ENG_BOUNCE_TRANSIENT,
	  "[203.0.113.5 15] Our system has detected an unusual rate of unsolicited mail "
	  "originating from your IP address. To protect our users from spam, mail sent from "
	  "your IP address has been temporarily rate limited." },
	{ 421, E(4, 7, 28), ENG_BOUNCE_TRANSIENT,
	  "Gmail has detected an unusual rate of unsolicited mail containing one of your URL "
	  "domains. To protect our users from spam, mail that contains your URL has been "
	  "temporarily rate limited." },
	{ 450, E(4, 2, 1), ENG_BOUNCE_TRANSIENT,
	  "The user you are trying to contact is receiving mail at a rate that prevents "
	  "additional messages from being delivered. Please resend your message at a later "
	  "time." },
	{ 550, E(5, 7, 28), ENG_BOUNCE_SPAM_RELATED,
	  "[203.0.113.5] Our system has detected an unusual rate of unsolicited mail "
	  "originating from your IP address. To protect our users from spam, mail sent from "
	  "your IP address has been blocked." },
	{ 552, E(5, 7, 0), ENG_BOUNCE_CONTENT_RELATED,
	  "This message was blocked because its content presents a potential security issue. "
	  "Please visit https://support.google.com/mail/?p=BlockedMessage to review our "
	  "message content and attachment content guidelines." },
	{ 553, E(5, 1, 3), ENG_BOUNCE_BAD_MAILBOX,
	  "The recipient address <bob@@example.com> is not a valid RFC 5321 address." },
	{ 550, E(5, 7, 1), ENG_BOUNCE_POLICY_RELATED,
	  "The user or domain that you are sending to (or from) has a policy that prohibited "
	  "the mail that you sent. Please contact your domain administrator for further "
	  "details." },
	{ 421, E(4, 3, 0), ENG_BOUNCE_TRANSIENT, "Temporary System Problem. Try again later." },
	{ 451, E(4, 3, 0), ENG_BOUNCE_TRANSIENT, "Mail server temporarily rejected message." },
	{ 555, E(5, 5, 2), ENG_BOUNCE_PROTOCOL, "Syntax error, cannot decode response." },
	{ 552, E(5, 7, 0), ENG_BOUNCE_CONTENT_RELATED,
	  "Our system detected an illegal attachment on your message. Please visit "
	  "http://mail.google.com/support/bin/answer.py?answer=6590 to review our attachment "
	  "guidelines." },
	/* Microsoft 365, Outlook.com, Hotmail */
	{ 550, E(5, 1, 10), ENG_BOUNCE_BAD_MAILBOX,
	  "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup" },
	{ 550, E(5, 4, 1), ENG_BOUNCE_BAD_MAILBOX,
	  "Recipient address rejected: Access denied. For more information see "
	  "https://aka.ms/EXOSmtpErrors [AM4PEPF00025F97.EURPRD83.prod.outlook.com]" },
	{ 550, E(5, 7, 1), ENG_BOUNCE_SPAM_RELATED,
	  "Unfortunately, messages from [203.0.113.5] weren't sent. Please contact your "
	  "Internet service provider since part of their network is on our block list (S3150). "
	  "You can also refer your provider to "
	  "http://mail.live.com/mail/troubleshooting.aspx#errors." },
	{ 550, E(5, 7, 606), ENG_BOUNCE_SPAM_RELATED,
	  "Access denied, banned sending IP [203.0.113.5]. To request removal from this list "
	  "please visit https://sender.office.com/ and follow the directions." },
	{ 550, E(5, 7, 708), ENG_BOUNCE_SPAM_RELATED,
	  "Service unavailable. Access denied, traffic not accepted from this IP. For more "
	  "information please go to http://go.microsoft.com/fwlink/?LinkId=526653" },
	{ 451, E(4, 7, 650), ENG_BOUNCE_TRANSIENT,
	  "The mail server [203.0.113.5] has been temporarily rate limited due to IP "
	  "reputation. For e-mail delivery information, see https://postmaster.live.com (S775)" },
	{ 550, E(5, 7, 509), ENG_BOUNCE_POLICY_RELATED,
	  "Access denied, sending domain EXAMPLE.ORG does not pass DMARC verification and has "
	  "a DMARC policy of reject." },
	{ 554, E(5, 2, 2), ENG_BOUNCE_QUOTA,
	  "mailbox full; "
	  "STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded" },
	{ 550, E(5, 5, 0), ENG_BOUNCE_BAD_MAILBOX,
	  "Requested action not taken: mailbox unavailable (S2017062302). "
	  "[DM6NAM11FT014.eop-nam11.prod.protection.outlook.com]" },
	{ 552, E(5, 3, 4), ENG_BOUNCE_MESSAGE_TOO_LARGE,
	  "Message size exceeds fixed maximum message size" },
	{ 554, E(5, 4, 14), ENG_BOUNCE_ROUTING,
	  "Hop count exceeded - possible mail loop ATTR34 "
	  "[BN8NAM11FT027.eop-nam11.prod.protection.outlook.com]" },
	{ 550, E(5, 7, 520), ENG_BOUNCE_POLICY_RELATED,
	  "Access denied, Your organization does not allow external forwarding. Please contact "
	  "your administrator for further assistance. AS(7555)" },
	{ 550, E(5, 7, 133), ENG_BOUNCE_POLICY_RELATED,
	  "RESOLVER.RST.SenderNotAuthenticatedForGroup; authentication required; Delivery "
	  "restriction check failed because the sender was not authenticated when sending to "
	  "this group" },
	{ 550, NONE, ENG_BOUNCE_SPAM_RELATED,
	  "SC-001 (BAY004-MC1F18) Unfortunately, messages from 203.0.113.5 weren't sent. "
	  "Please contact your Internet service provider. You can refer your provider to "
	  "http://mail.live.com/mail/troubleshooting.aspx#errors." },
	{ 452, E(4, 5, 3), ENG_BOUNCE_TRANSIENT,
	  "Too many recipients (AS780090) [BN8NAM11FT027.eop-nam11.prod.protection.outlook.com]" },
	{ 550, E(5, 7, 350), ENG_BOUNCE_SPAM_RELATED,
	  "Remote server returned message detected as spam" },
	{ 550, E(5, 7, 1), ENG_BOUNCE_POLICY_RELATED,
	  "Mail rejected by Windows Live Hotmail for policy reasons." },
	/* Yahoo, AOL */
	{ 554, NONE, ENG_BOUNCE_BAD_MAILBOX,
	  "delivery error: dd This user doesn't have a yahoo.com account (bob@yahoo.com) [0] - "
	  "mta4002.mail.bf1.yahoo.com" },
	{ 554, NONE, ENG_BOUNCE_INACTIVE_MAILBOX,
	  "delivery error: dd Sorry your message to bob@yahoo.com cannot be delivered. This "
	  "mailbox is disabled (554.30). - mta1234.mail.ne1.yahoo.com" },
	{ 552, NONE, ENG_BOUNCE_BAD_MAILBOX,
	  "1 Requested mail action aborted, mailbox not found" },
	{ 421, E(4, 7, 0), ENG_BOUNCE_TRANSIENT,
	  "[TSS04] Messages from 203.0.113.5 temporarily deferred due to unexpected volume or "
	  "user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes" },
	{ 553, E(5, 7, 2), ENG_BOUNCE_SPAM_RELATED,
	  "[TSS09] All messages from 203.0.113.5 will be permanently deferred; Retrying will "
	  "NOT succeed. See https://postmaster.yahooinc.com/error-codes" },
	{ 554, E(5, 7, 9), ENG_BOUNCE_POLICY_RELATED,
	  "Message not accepted for policy reasons. See "
	  "https://postmaster.yahooinc.com/error-codes" },
	{ 553, E(5, 7, 1), ENG_BOUNCE_SPAM_RELATED,
	  "[BL21] Connections will not be accepted from 203.0.113.5, because the ip is in "
	  "Spamhaus's list; see https://postmaster.yahooinc.com/error-codes" },
	{ 451, NONE, ENG_BOUNCE_TRANSIENT, "Message temporarily deferred - [160]" },
	{ 554, NONE, ENG_BOUNCE_POLICY_RELATED,
	  "Message not allowed - [PH01] Email not accepted for policy reasons. Please visit "
	  "https://postmaster.yahooinc.com/error-codes" },
	/* Apple iCloud, Proofpoint */
	{ 550, E(5, 1, 1), ENG_BOUNCE_BAD_MAILBOX, "<bob@icloud.com>: user does not exist" },
	{ 552, E(5, 2, 2), ENG_BOUNCE_QUOTA, "<bob@icloud.com>: user is over quota" },
	{ 554, E(5, 7, 1), ENG_BOUNCE_POLICY_RELATED,
	  "[CS01] Message rejected due to local policy. Please visit "
	  "https://support.apple.com/en-us/HT204137" },
	{ 550, E(5, 7, 0), ENG_BOUNCE_SPAM_RELATED,
	  "Blocked - see https://support.proofpoint.com/dnsbl-lookup.cgi?ip=203.0.113.5" },
	{ 554, E(5, 7, 1), ENG_BOUNCE_SPAM_RELATED,
	  "[P2] Message blocked due to spam content in the message." },
	/* Postfix */
	{ 550, E(5, 1, 1), ENG_BOUNCE_BAD_MAILBOX,
	  "<bob@example.com>: Recipient address rejected: User unknown in virtual mailbox table" },
	{ 554, E(5, 7, 1), ENG_BOUNCE_RELAYING_DENIED, "<bob@example.com>: Relay access denied" },
	{ 450, E(4, 2, 0), ENG_BOUNCE_TRANSIENT,
	  "<bob@example.com>: Recipient address rejected: Greylisted, see "
	  "http://postgrey.schweikert.ch/help/example.com.html" },
	{ 450, E(4, 1, 8), ENG_BOUNCE_TRANSIENT,
	  "<news@example.org>: Sender address rejected: Domain not found" },
	{ 553, E(5, 1, 8), ENG_BOUNCE_INVALID_SENDER,
	  "<news@example.org>: Sender address rejected: Domain not found" },
	{ 554, E(5, 7, 1), ENG_BOUNCE_SPAM_RELATED,
	  "Service unavailable; Client host [203.0.113.5] blocked using zen.spamhaus.org; "
	  "https://www.spamhaus.org/query/ip/203.0.113.5" },
	{ 554, NONE, ENG_BOUNCE_SPAM_RELATED,
	  "Service unavailable; Client host [203.0.113.5] blocked using Barracuda Reputation; "
	  "http://www.barracudanetworks.com/reputation/?r=1&ip=203.0.113.5" },
	{ 550, E(5, 2, 1), ENG_BOUNCE_INACTIVE_MAILBOX,
	  "<bob@example.com>: Recipient address rejected: mailbox disabled" },
	{ 554, E(5, 7, 1), ENG_BOUNCE_POLICY_RELATED,
	  "<client.example[203.0.113.5]>: Client host rejected: Access denied" },
	{ 504, E(5, 5, 2), ENG_BOUNCE_PROTOCOL,
	  "<localhost>: Helo command rejected: need fully-qualified hostname" },
	{ 552, E(5, 3, 4), ENG_BOUNCE_MESSAGE_TOO_LARGE, "Error: message file too big" },
	{ 550, E(5, 1, 2), ENG_BOUNCE_BAD_DOMAIN,
	  "Host unknown (Name server: example.invalid: host not found)" },
	{ 556, E(5, 1, 10), ENG_BOUNCE_BAD_DOMAIN, "Recipient address has null MX" },
	{ 521, E(5, 3, 2), ENG_BOUNCE_BAD_DOMAIN, "mail.example.com does not accept mail" },
	{ 503, E(5, 5, 1), ENG_BOUNCE_PROTOCOL, "Error: need RCPT command" },
	{ 500, E(5, 5, 2), ENG_BOUNCE_PROTOCOL, "Error: command not recognized" },
	{ 550, E(5, 1, 0), ENG_BOUNCE_INVALID_SENDER,
	  "<news@example.org> sender rejected: Address verification failed" },
	/* Exim, cPanel */
	{ 550, NONE, ENG_BOUNCE_BAD_MAILBOX, "No Such User Here" },
	{ 550, NONE, ENG_BOUNCE_INVALID_SENDER,
	  "Verification failed for <news@example.org>\nNo Such User Here\nSender verify failed" },
	{ 550, NONE, ENG_BOUNCE_BAD_MAILBOX, "Unrouteable address" },
	{ 550, NONE, ENG_BOUNCE_POLICY_RELATED, "Administrative prohibition" },
	{ 550, NONE, ENG_BOUNCE_SPAM_RELATED, "Message rejected as spam by Content Filtering." },
	{ 554, E(5, 7, 1), ENG_BOUNCE_CONTENT_RELATED,
	  "This message contains a virus (Eicar-Signature) and has been rejected" },
	/* qmail */
	{ 553, NONE, ENG_BOUNCE_RELAYING_DENIED,
	  "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)" },
	{ 550, NONE, ENG_BOUNCE_BAD_MAILBOX, "sorry, no mailbox here by that name. (#5.1.1)" },
	/* Yandex, Mail.ru, Mimecast, Comcast */
	{ 550, E(5, 7, 1), ENG_BOUNCE_BAD_MAILBOX, "No such user!" },
	{ 550, NONE, ENG_BOUNCE_INACTIVE_MAILBOX,
	  "Message was not accepted -- invalid mailbox.  Local mailbox bob@mail.ru is "
	  "unavailable: account is disabled" },
	{ 550, NONE, ENG_BOUNCE_BAD_MAILBOX,
	  "Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#550 [abc.uk1]" },
	{ 550, NONE, ENG_BOUNCE_POLICY_RELATED,
	  "Rejected by header based Anti-Spoofing policy: news@example.org - "
	  "https://community.mimecast.com/docs/DOC-1369#550 [abc.eu1]" },
	{ 554, NONE, ENG_BOUNCE_SPAM_RELATED,
	  "resimta-ch2-12v.sys.comcast.net comcast 203.0.113.5 Comcast block for spam. Please "
	  "see http://postmaster.comcast.net/smtp-error-codes.php#BL000000" },
	{ 550, E(5, 1, 1), ENG_BOUNCE_BAD_MAILBOX, "<bob@comcast.net> user unknown" },
	/* Generic, RFC texts */
	{ 530, E(5, 7, 0), ENG_BOUNCE_POLICY_RELATED, "Authentication required" },
	{ 451, E(4, 4, 2), ENG_BOUNCE_TRANSIENT, "Timeout waiting for data from client" },
	{ 554, E(5, 4, 7), ENG_BOUNCE_MESSAGE_EXPIRED, "Delivery expired (message too old)" },
	{ 550, E(5, 2, 0), ENG_BOUNCE_BAD_MAILBOX, "Mailbox unavailable" },
	{ 552, NONE, ENG_BOUNCE_QUOTA,
	  "Requested mail action aborted: exceeded storage allocation" },
	{ 452, NONE, ENG_BOUNCE_QUOTA, "Mailbox full" },
	{ 554, E(5, 6, 0), ENG_BOUNCE_CONTENT_RELATED, "Message contains invalid header" },
	{ 552, E(5, 2, 3), ENG_BOUNCE_MESSAGE_TOO_LARGE,
	  "Message length exceeds administrative limit" },
	{ 550, E(5, 7, 1), ENG_BOUNCE_RELAYING_DENIED, "Unable to relay" },
	{ 551, E(5, 1, 6), ENG_BOUNCE_INACTIVE_MAILBOX,
	  "User has moved; please try <bob@new.example>" },
	{ 550, E(5, 7, 27), ENG_BOUNCE_INVALID_SENDER, "Sender address has null MX" },
	{ 554, NONE, ENG_BOUNCE_OTHER, "Transaction failed" },
	/* Engine-made failures: no reply (code 0) */
	{ 0, NONE, ENG_BOUNCE_TRANSIENT,
	  "connect to mx.example.com[192.0.2.1]:25: Connection refused" },
	{ 0, E(4, 4, 7), ENG_BOUNCE_MESSAGE_EXPIRED, "delivery time expired" },
	/* KumoMTA iana.toml reference lines (reliability.md DSN-05) */
	{ 552, E(5, 2, 2), ENG_BOUNCE_QUOTA, "" },
	{ 525, E(4, 7, 13), ENG_BOUNCE_INACTIVE_MAILBOX, "" },
	{ 352, E(5, 2, 2), ENG_BOUNCE_OTHER, "" },
	{ 550, E(5, 1, 10), ENG_BOUNCE_BAD_DOMAIN, "" },
	{ 550, E(5, 1, 7), ENG_BOUNCE_INVALID_SENDER, "" },
	{ 550, E(5, 4, 4), ENG_BOUNCE_ROUTING, "" },
	{ 550, E(5, 7, 17), ENG_BOUNCE_INACTIVE_MAILBOX, "" },
	{ 550, E(5, 7, 18), ENG_BOUNCE_BAD_DOMAIN, "" },
	/* Not failures */
	{ 250, E(2, 0, 0), ENG_BOUNCE_OTHER, "OK user unknown" },
};
/* clang-format on */

_Static_assert(ENG_ARRAY_COUNT(corpus) >= 40, "at least 40 real-world lines");

/* One process for the whole table (Criterion forks per test; a process
 * per row costs more than the rows): every row is checked and each wrong
 * one is reported with its index, reply and the rule that decided. */
Test(eng_bounce, real_world_replies, .init = table_setup)
{
	for (uint32_t i = 0; i < ENG_ARRAY_COUNT(corpus); i++) {
		const struct corpus_case *c = &corpus[i];
		/* An exact-size copy: any read past the text is an ASan error. */
		size_t len = strlen(c->text);
		char *text = malloc(len + 1);
		cr_assert_not_null(text);
		memcpy(text, c->text, len);
		struct eng_bounce_match match;
		enum eng_bounce_category got = eng_bounce_classify(
			&table, c->code, c->enhanced, len > 0 ? text : NULL, len, &match);
		cr_expect_eq(got, c->want, "case %u: %u \"%s\": got %s (rule line %u), want %s", i,
			     c->code, c->text, eng_bounce_category_name(got), match.line,
			     eng_bounce_category_name(c->want));
		cr_expect_eq(got, match.category);
		free(text);
	}
}

Test(eng_bounce, category_names_round_trip)
{
	for (uint32_t i = 0; i < ENG_BOUNCE_CATEGORY_COUNT; i++) {
		const char *name = eng_bounce_category_name((enum eng_bounce_category)i);
		enum eng_bounce_category back;
		cr_assert(eng_bounce_category_parse(name, strlen(name), &back), "%s", name);
		cr_assert_eq(back, (enum eng_bounce_category)i);
	}
	enum eng_bounce_category unused;
	cr_assert_not(eng_bounce_category_parse("Bad-Mailbox", 11, &unused));
	cr_assert_not(eng_bounce_category_parse("bad-mailboxx", 12, &unused));
	cr_assert_not(eng_bounce_category_parse("bad-mailbox", 10, &unused)); /* a prefix */
	cr_assert_not(eng_bounce_category_parse(NULL, 0, &unused));
	cr_assert_str_eq(eng_bounce_category_name(ENG_BOUNCE_QUOTA), "quota");
	cr_assert_str_eq(eng_bounce_category_name(ENG_BOUNCE_SPAM_RELATED), "spam-related");
}

Test(eng_bounce, category_out_of_range_is_a_programmer_error, .signal = SIGABRT)
{
	(void)eng_bounce_category_name(ENG_BOUNCE_CATEGORY_COUNT);
}

Test(eng_bounce, enhanced_status_format_and_validity)
{
	char out[ENG_ENHANCED_TEXT_SIZE];
	cr_assert_eq(eng_enhanced_format((struct eng_enhanced)E(5, 1, 1), out), 5);
	cr_assert_str_eq(out, "5.1.1");
	cr_assert_eq(eng_enhanced_format((struct eng_enhanced)E(4, 999, 999), out), 9);
	cr_assert_str_eq(out, "4.999.999");
	cr_assert_eq(eng_enhanced_format((struct eng_enhanced)NONE, out), 0);
	cr_assert_str_eq(out, "");
	cr_assert_not(eng_enhanced_is_valid((struct eng_enhanced)E(3, 1, 1)));
	cr_assert_not(eng_enhanced_is_valid((struct eng_enhanced)E(5, 1000, 1)));
	cr_assert_not(eng_enhanced_is_valid((struct eng_enhanced)E(5, 1, 1000)));
	cr_assert(eng_enhanced_is_valid((struct eng_enhanced)E(2, 0, 0)));
}

Test(eng_bounce, builtin_rules_parse_and_say_where_they_matched, .init = table_setup)
{
	cr_assert_gt(table.builtin_count, 100);
	cr_assert_eq(table.site_count, 0);
	struct eng_bounce_match match;
	eng_bounce_classify(&table, 550, (struct eng_enhanced)E(5, 1, 1), NULL, 0, &match);
	cr_assert_eq(match.source, ENG_BOUNCE_SOURCE_BUILTIN);
	/* The line number points at "5xx *.1.1 -> bad-mailbox" in the text. */
	const char *p = eng_bounce_builtin_rules;
	for (uint32_t line = 1; line < match.line; line++)
		p = strchr(p, '\n') + 1;
	cr_assert(strncmp(p, "5xx *.1.1 -> bad-mailbox\n", 25) == 0, "line %u: %.40s", match.line,
		  p);
	eng_bounce_classify(&table, 554, (struct eng_enhanced)NONE, "zzz", 3, &match);
	cr_assert_eq(match.source, ENG_BOUNCE_SOURCE_FALLBACK);
	cr_assert_eq(match.category, ENG_BOUNCE_OTHER);
	cr_assert_eq(match.line, 0);
	eng_bounce_classify(&table, 499, (struct eng_enhanced)NONE, "zzz", 3, &match);
	cr_assert_eq(match.category, ENG_BOUNCE_TRANSIENT);
	eng_bounce_classify(&table, 600, (struct eng_enhanced)E(5, 1, 1), NULL, 0, &match);
	cr_assert_eq(match.source, ENG_BOUNCE_SOURCE_NOT_FAILURE);
	cr_assert_eq(match.category, ENG_BOUNCE_OTHER);
	cr_assert_eq(eng_bounce_classify(&table, 550, (struct eng_enhanced)E(5, 1, 1), NULL, 0,
					 NULL),
		     ENG_BOUNCE_BAD_MAILBOX); /* match is optional */
}

Test(eng_bounce, text_match_ignores_case_and_blank_runs, .init = table_setup)
{
	static const char text[] = "RECIPIENT\r\n\t  ADDRESS   rejected: USER\tUNKNOWN";
	cr_assert_eq(eng_bounce_classify(&table, 550, (struct eng_enhanced)NONE, text,
					 sizeof(text) - 1, NULL),
		     ENG_BOUNCE_BAD_MAILBOX);
	/* A NUL is a byte like any other (a blank), never the end of the text. */
	static const char with_nul[] = "abc\0user unknown";
	cr_assert_eq(eng_bounce_classify(&table, 550, (struct eng_enhanced)NONE, with_nul,
					 sizeof(with_nul) - 1, NULL),
		     ENG_BOUNCE_BAD_MAILBOX);
	/* Only len bytes count: the phrase past len is not seen. */
	cr_assert_eq(eng_bounce_classify(&table, 550, (struct eng_enhanced)NONE, "user unknown",
					 8, NULL),
		     ENG_BOUNCE_OTHER);
}

Test(eng_bounce, text_beyond_the_scan_bound_is_not_read, .init = table_setup)
{
	size_t size = ENG_BOUNCE_SCAN_SIZE_MAX + 200;
	char *text = malloc(size);
	cr_assert_not_null(text);
	memset(text, 'a', size);
	memcpy(text + ENG_BOUNCE_SCAN_SIZE_MAX + 50, " user unknown ", 14);
	cr_assert_eq(eng_bounce_classify(&table, 550, (struct eng_enhanced)NONE, text, size, NULL),
		     ENG_BOUNCE_OTHER);
	memcpy(text + 100, " user unknown ", 14);
	cr_assert_eq(eng_bounce_classify(&table, 550, (struct eng_enhanced)NONE, text, size, NULL),
		     ENG_BOUNCE_BAD_MAILBOX);
	free(text);
}

Test(eng_bounce, null_text_with_a_length_is_a_programmer_error, .signal = SIGABRT,
     .init = table_setup)
{
	(void)eng_bounce_classify(&table, 550, (struct eng_enhanced)NONE, NULL, 5, NULL);
}

/* ---- site overrides ---------------------------------------------------- */

static void
load_ok(const char *text)
{
	struct eng_bounce_error err;
	int rc = eng_bounce_table_load(&table, text, strlen(text), &err);
	cr_assert_eq(rc, 0, "load failed: line %u: %s", err.line, err.message);
}

static enum eng_bounce_category
classify(uint16_t code, struct eng_enhanced enhanced, const char *text, uint32_t *line)
{
	struct eng_bounce_match match;
	enum eng_bounce_category got =
		eng_bounce_classify(&table, code, enhanced, text, strlen(text), &match);
	if (line != NULL)
		*line = match.source == ENG_BOUNCE_SOURCE_SITE ? match.line : 0;
	return got;
}

Test(eng_bounce, site_rules_come_before_the_builtin_ones, .init = table_setup)
{
	load_ok("# operator rules\r\n"
		"\r\n"
		"4xx /unusual rate/ -> spam-related\r\n"
		"550 5.1.1 /mailbox unavailable/ -> inactive-mailbox\r\n"
		"  *.7.1   /see http://x/y -> z/   ->   content-related  \r\n"
		"55X -> routing\n"
		"5.7.* -> relaying-denied\n"
		"\t5xx\t*.*.*\t/\tWeird   SPACING\t/ -> protocol\n");
	cr_assert_eq(table.site_count, 6);
	uint32_t line;
	cr_assert_eq(classify(421, (struct eng_enhanced)E(4, 7, 0),
			      "Our system has detected an unusual rate of unsolicited mail", &line),
		     ENG_BOUNCE_SPAM_RELATED);
	cr_assert_eq(line, 3);
	cr_assert_eq(classify(550, (struct eng_enhanced)E(5, 1, 1), "Mailbox unavailable", &line),
		     ENG_BOUNCE_INACTIVE_MAILBOX);
	cr_assert_eq(line, 4);
	cr_assert_eq(classify(554, (struct eng_enhanced)E(5, 7, 1), "please SEE http://x/y -> z!",
			      &line),
		     ENG_BOUNCE_CONTENT_RELATED);
	cr_assert_eq(line, 5);
	cr_assert_eq(classify(552, (struct eng_enhanced)E(5, 2, 2), "over quota", &line),
		     ENG_BOUNCE_ROUTING);
	cr_assert_eq(line, 6);
	cr_assert_eq(classify(530, (struct eng_enhanced)E(5, 7, 26), "", &line),
		     ENG_BOUNCE_RELAYING_DENIED);
	cr_assert_eq(line, 7);
	cr_assert_eq(classify(500, (struct eng_enhanced)E(5, 0, 0), "weird spacing here", &line),
		     ENG_BOUNCE_PROTOCOL);
	cr_assert_eq(line, 8);
	/* Untouched by the site rules: the built-ins still apply. */
	cr_assert_eq(classify(421, (struct eng_enhanced)E(4, 7, 0), "try later", &line),
		     ENG_BOUNCE_TRANSIENT);
	cr_assert_eq(line, 0);
}

Test(eng_bounce, a_site_catch_all_replaces_the_defaults, .init = table_setup)
{
	load_ok("5.1.1 -> bad-mailbox\n* -> other\n");
	cr_assert_eq(classify(550, (struct eng_enhanced)E(5, 1, 1), "", NULL),
		     ENG_BOUNCE_BAD_MAILBOX);
	cr_assert_eq(classify(552, (struct eng_enhanced)E(5, 2, 2), "mailbox full", NULL),
		     ENG_BOUNCE_OTHER);
	cr_assert_eq(classify(421, (struct eng_enhanced)NONE, "", NULL), ENG_BOUNCE_OTHER);
}

Test(eng_bounce, loading_replaces_and_a_bad_file_changes_nothing, .init = table_setup)
{
	load_ok("/flux capacitor/ -> quota\n");
	cr_assert_eq(classify(550, (struct eng_enhanced)NONE, "Flux Capacitor", NULL),
		     ENG_BOUNCE_QUOTA);
	struct eng_bounce_error err;
	const char *bad = "/warp core/ -> routing\nnot a rule\n";
	cr_assert_eq(eng_bounce_table_load(&table, bad, strlen(bad), &err), -EINVAL);
	cr_assert_eq(err.line, 2);
	cr_assert_eq(table.site_count, 1);
	cr_assert_eq(classify(550, (struct eng_enhanced)NONE, "Flux Capacitor", NULL),
		     ENG_BOUNCE_QUOTA);
	cr_assert_eq(classify(550, (struct eng_enhanced)NONE, "warp core", NULL), ENG_BOUNCE_OTHER);
	load_ok("/warp core/ -> routing\n");
	cr_assert_eq(classify(550, (struct eng_enhanced)NONE, "Flux Capacitor", NULL),
		     ENG_BOUNCE_OTHER);
	load_ok("");
	cr_assert_eq(table.site_count, 0);
}

struct bad_case {
	char text[640];
	size_t text_len; /* 0: strlen */
	uint32_t line;
	char message[64];
	int rc;
};

#define BAD(t, l, m) { t, 0, l, m, -EINVAL }

static const struct bad_case bad_cases[] = {
	BAD("550 -> nonsense\n", 1, "unknown category 'nonsense'"),
	BAD("# ok\n\n5.7.1 /spam -> spam-related\n", 3, "unterminated /text/"),
	BAD("550 spam-related\n", 1, "missing '->'"),
	BAD("-> quota\n", 1, "no condition before '->'"),
	BAD("* 550 -> quota\n", 1, "must stand alone"),
	BAD("5.7 -> quota\n", 1, "bad enhanced status pattern '5.7'"),
	BAD("6.1.1 -> quota\n", 1, "bad enhanced status pattern"),
	BAD("5.1.1000 -> quota\n", 1, "bad enhanced status pattern"),
	BAD("5.1.1.1 -> quota\n", 1, "bad enhanced status pattern"),
	BAD("5..1 -> quota\n", 1, "bad enhanced status pattern"),
	BAD("5x0 -> quota\n", 1, "unknown condition"),
	BAD("650 -> quota\n", 1, "unknown condition"),
	BAD("hello -> quota\n", 1, "unknown condition"),
	BAD("550 551 -> quota\n", 1, "second reply code condition"),
	BAD("5.1.1 5.1.2 -> quota\n", 1, "second enhanced status condition"),
	BAD("/a/ 550 -> quota\n", 1, "/text/ must be the last condition"),
	BAD("// -> quota\n", 1, "empty /text/"),
	BAD("/ \t / -> quota\n", 1, "empty /text/"),
	BAD("/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaa/ -> quota\n",
	    1, "longer than 96 bytes"),
	BAD("550 ->\n", 1, "missing category"),
	BAD("550 -> quota extra\n", 1, "unknown category 'quota extra'"),
	BAD("550 -> quota\n/a\x01b/ -> quota\n", 2, "control character"),
	BAD("550 -> quota\r\n550 -> Quota\r\n", 2, "unknown category 'Quota'"),
	{ "550 -> quota\n5.1.1 -> quota\0\n", 29, 2, "NUL byte", -EINVAL },
};

Test(eng_bounce, override_errors_name_the_line, .init = table_setup)
{
	for (uint32_t i = 0; i < ENG_ARRAY_COUNT(bad_cases); i++) {
		const struct bad_case *c = &bad_cases[i];
		size_t len = c->text_len != 0 ? c->text_len : strlen(c->text);
		struct eng_bounce_error err;
		int rc = eng_bounce_table_load(&table, c->text, len, &err);
		cr_expect_eq(rc, c->rc, "case %u: rc %d for %s", i, rc, c->text);
		cr_expect_eq(err.line, c->line, "case %u: line %u (%s) for %s", i, err.line,
			     err.message, c->text);
		cr_expect(strstr(err.message, c->message) != NULL,
			  "case %u: message '%s', want '%s'", i, err.message, c->message);
		cr_expect_eq(table.site_count, 0);
	}
}

Test(eng_bounce, override_bounds_are_enforced, .init = table_setup)
{
	struct eng_bounce_error err;
	/* A line over 512 bytes. */
	char line[700];
	memset(line, 'a', sizeof(line));
	memcpy(line, "550 /", 5);
	memcpy(line + sizeof(line) - 12, "/ -> quota\n", 11);
	cr_assert_eq(eng_bounce_table_load(&table, line, sizeof(line) - 1, &err), -EINVAL);
	cr_assert_eq(err.line, 1);
	cr_assert(strstr(err.message, "longer than 512") != NULL, "%s", err.message);
	/* One rule too many: 257 lines. */
	size_t size = (ENG_BOUNCE_SITE_RULES_MAX + 1) * 13;
	char *many = malloc(size);
	cr_assert_not_null(many);
	for (uint32_t i = 0; i <= ENG_BOUNCE_SITE_RULES_MAX; i++)
		memcpy(many + i * 13, "550 -> quota\n", 13);
	cr_assert_eq(eng_bounce_table_load(&table, many, size, &err), -E2BIG);
	cr_assert_eq(err.line, ENG_BOUNCE_SITE_RULES_MAX + 1);
	cr_assert_eq(eng_bounce_table_load(&table, many, size - 13, &err), 0); /* exactly 256 */
	cr_assert_eq(table.site_count, ENG_BOUNCE_SITE_RULES_MAX);
	free(many);
	/* A file over 256 KiB, whatever it holds. */
	size = ENG_BOUNCE_FILE_SIZE_MAX + 1;
	char *big = calloc(1, size);
	cr_assert_not_null(big);
	memset(big, '\n', size);
	cr_assert_eq(eng_bounce_table_load(&table, big, size, &err), -E2BIG);
	cr_assert_eq(err.line, 0);
	free(big);
}

Test(eng_bounce, load_file_reads_the_override_file, .init = table_setup)
{
	char path[] = "/tmp/ringmail-bounce-XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	const char *rules = "# site\n/flux capacitor/ -> quota\n";
	cr_assert_eq(write(fd, rules, strlen(rules)), (ssize_t)strlen(rules));
	close(fd);
	struct eng_bounce_error err;
	cr_assert_eq(eng_bounce_table_load_file(&table, path, &err), 0, "%s", err.message);
	cr_assert_eq(classify(550, (struct eng_enhanced)NONE, "flux capacitor", NULL),
		     ENG_BOUNCE_QUOTA);
	unlink(path);
	cr_assert_eq(eng_bounce_table_load_file(&table, path, &err), -ENOENT);
	cr_assert(strstr(err.message, path) != NULL, "%s", err.message);
	cr_assert_eq(table.site_count, 1); /* unchanged */
}

/* docs/bounces.md shows eng_bounce_builtin_rules byte for byte. */
Test(eng_bounce, docs_show_the_builtin_rules_verbatim)
{
	const char *src = getenv("RINGMAIL_SOURCE_DIR");
	if (src == NULL)
		cr_skip_test("RINGMAIL_SOURCE_DIR not set (run through meson test)");
	char path[4096];
	snprintf(path, sizeof(path), "%s/docs/bounces.md", src);
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "%s", path);
	static char doc[256 * 1024];
	size_t n = fread(doc, 1, sizeof(doc) - 1, f);
	fclose(f);
	doc[n] = '\0';
	const char *marker = "<!-- builtin-rules: begin -->\n```\n";
	const char *begin = strstr(doc, marker);
	cr_assert_not_null(begin, "marker missing in %s", path);
	begin += strlen(marker);
	const char *end = strstr(begin, "```\n<!-- builtin-rules: end -->");
	cr_assert_not_null(end, "end marker missing in %s", path);
	size_t doc_len = (size_t)(end - begin);
	size_t code_len = strlen(eng_bounce_builtin_rules);
	size_t same = 0;
	while (same < doc_len && same < code_len && begin[same] == eng_bounce_builtin_rules[same])
		same++;
	cr_assert(same == doc_len && same == code_len,
		  "docs/bounces.md and eng_bounce_builtin_rules differ at byte %zu: doc '%.40s' "
		  "code '%.40s'",
		  same, begin + same, eng_bounce_builtin_rules + same);
}
